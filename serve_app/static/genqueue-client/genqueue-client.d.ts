/**
 * genqueue's client for browsers and Node 20+: `fetch` only, no dependencies.
 *
 *     const client = new GenqueueClient({ baseUrl: "https://genqueue.example", token });
 *     const task = await client.submit("photography", { person: file }, "warm film portrait");
 *     for await (const view of task.watch()) console.log(view.status, view.position);
 *     const image = await task.result(); // a Blob
 */
import { type FetchLike, type RetryOptions, type TokenSource } from "./http.js";
import { type WatchOptions } from "./watching.js";
import type { Cancelled, Images, Kind, Me, SubmitOptions, Submitted, TaskView } from "./types.js";
export { GenqueueError, retryAfterSeconds } from "./errors.js";
export type { Alternative, FieldError, Problem } from "./errors.js";
export { EventStreamParser, readEvents } from "./sse.js";
export type { ServerEvent } from "./sse.js";
export { encodeImage, base64Of } from "./images.js";
export type { ImageInput, ImageUrl } from "./images.js";
export { DEFAULT_RETRY } from "./http.js";
export type { FetchLike, RetryOptions, TokenSource } from "./http.js";
export type { WatchOptions } from "./watching.js";
export { TERMINAL } from "./types.js";
export type * from "./types.js";
/** How a client reaches genqueue. */
export interface ClientOptions {
    /** Where genqueue answers (`https://genqueue.example`); "" (the default) is the page's own origin. */
    baseUrl?: string;
    /** The bearer token, or a function that reads it at each request. */
    token?: TokenSource;
    /** The `fetch` to use: the platform's unless given. */
    fetch?: FetchLike;
    /** When to retry (see `RetryOptions`); the rest stay at their defaults. */
    retry?: Partial<RetryOptions>;
}
/** A signal to stop waiting for a request. */
export interface Signal {
    signal?: AbortSignal | undefined;
}
/** The end of `submitAndWait`: the task, its last view, and its image when it succeeded. */
export interface Finished {
    task: Task;
    view: TaskView;
    image: Blob | null;
}
/** An idempotency key: a random UUID (random hex where `randomUUID` is missing: plain http). */
export declare function newIdempotencyKey(): string;
/** A task of genqueue: its status, its updates as they come, its result, its cancel. */
export declare class Task {
    /** The task's id. */
    readonly id: string;
    /** The answer to the submit that made it (undefined for a task taken by its id). */
    readonly submitted: Submitted | undefined;
    /** Whether the submit was answered with a task made earlier under the same idempotency key. */
    readonly replayed: boolean;
    /** The id of the last update `watch` yielded: pass it as `lastEventId` to resume later. */
    lastEventId: string;
    private readonly http;
    private get path();
    /** The task as it stands: status, stage, position, ETA, timestamps, error, price. */
    status(opts?: Signal): Promise<TaskView>;
    /**
     * The task's updates over Server-Sent Events, each a task view, ending after the one with a
     * terminal status (succeeded, failed, cancelled, expired). A dropped connection is opened
     * again with `Last-Event-ID`, so nothing is missed nor repeated. Leaving the loop closes the
     * stream.
     */
    watch(opts?: WatchOptions): AsyncGenerator<TaskView, void, undefined>;
    /** The task's view once it has ended. */
    wait(opts?: WatchOptions): Promise<TaskView>;
    /**
     * The generated image: a 409 `GenqueueError` unless the task succeeded, its problem saying why
     * (it failed, was cancelled or expired, or has not ended yet).
     */
    result(opts?: Signal & {
        as?: "blob";
    }): Promise<Blob>;
    result(opts: Signal & {
        as: "arrayBuffer";
    }): Promise<ArrayBuffer>;
    /**
     * Cancel the task while it waits for its turn; its credits are refunded. A 409 `GenqueueError`
     * once it was handed to a worker or has ended. A cancel retried after its answer was lost
     * answers as the first one did.
     */
    cancel(opts?: Signal): Promise<Cancelled>;
}
/** A client of one genqueue, as one token. */
export declare class GenqueueClient {
    private readonly http;
    constructor(opts?: ClientOptions);
    /** Where the client sends its requests ("" for the page's own origin). */
    get baseUrl(): string;
    /**
     * Queue a task; answers at once with the task, its place and ETA in `task.submitted`. Its
     * price is charged now (a 402 `GenqueueError` with `balance` and `price` when the balance does
     * not cover it). The submit carries an idempotency key (made here unless given), so a retry
     * after a lost answer returns the first task and charges nothing again.
     */
    submit(kind: Kind, images: Images, prompt?: string, opts?: SubmitOptions): Promise<Task>;
    /** A task by its id (one submitted earlier, or by another client). */
    task(id: string): Task;
    /** The caller's balance and newest ledger entries (a service or admin token: `userId`'s). */
    me(opts?: Signal & {
        userId?: string;
    }): Promise<Me>;
    /** Submit, follow the task to its end, and fetch its image when it succeeded. */
    submitAndWait(kind: Kind, images: Images, prompt?: string, opts?: SubmitOptions & Omit<WatchOptions, "lastEventId">): Promise<Finished>;
}
