/**
 * genqueue's client for browsers and Node 20+: `fetch` only, no dependencies.
 *
 *     const client = new GenqueueClient({ baseUrl: "https://genqueue.example", token });
 *     const task = await client.submit("photography", { person: file }, "warm film portrait");
 *     for await (const view of task.watch()) console.log(view.status, view.position);
 *     const image = await task.result(); // a Blob
 */
import { encodeImage } from "./images.js";
import { Transport } from "./http.js";
import { watchTask } from "./watching.js";
import { GenqueueError } from "./errors.js";
export { GenqueueError, retryAfterSeconds } from "./errors.js";
export { EventStreamParser, readEvents } from "./sse.js";
export { encodeImage, base64Of } from "./images.js";
export { DEFAULT_RETRY } from "./http.js";
export { TERMINAL } from "./types.js";
/** An idempotency key: a random UUID (random hex where `randomUUID` is missing: plain http). */
export function newIdempotencyKey() {
    const c = globalThis.crypto;
    if (typeof c.randomUUID === "function")
        return c.randomUUID();
    return Array.from(c.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
/** A task of genqueue: its status, its updates as they come, its result, its cancel. */
export class Task {
    /** The task's id. */
    id;
    /** The answer to the submit that made it (undefined for a task taken by its id). */
    submitted;
    /** Whether the submit was answered with a task made earlier under the same idempotency key. */
    replayed;
    /** The id of the last update `watch` yielded: pass it as `lastEventId` to resume later. */
    lastEventId = "";
    http;
    /** @internal Use `client.submit` or `client.task(id)`. */
    constructor(http, id, submitted, replayed = false) {
        this.http = http;
        this.id = id;
        this.submitted = submitted;
        this.replayed = replayed;
    }
    get path() {
        return `/v1/tasks/${encodeURIComponent(this.id)}`;
    }
    /** The task as it stands: status, stage, position, ETA, timestamps, error, price. */
    status(opts = {}) {
        return this.http.json(this.path, { signal: opts.signal });
    }
    /**
     * The task's updates over Server-Sent Events, each a task view, ending after the one with a
     * terminal status (succeeded, failed, cancelled, expired). A dropped connection is opened
     * again with `Last-Event-ID`, so nothing is missed nor repeated. Leaving the loop closes the
     * stream.
     */
    async *watch(opts = {}) {
        for await (const update of watchTask(this.http, this.path, opts)) {
            this.lastEventId = update.id;
            yield update.view;
        }
    }
    /** The task's view once it has ended. */
    async wait(opts = {}) {
        let last;
        for await (const view of this.watch(opts))
            last = view;
        if (last === undefined)
            throw new Error(`the watch of task ${this.id} ended without an update`);
        return last;
    }
    async result(opts = {}) {
        const response = await this.http.send(`${this.path}/result`, {
            headers: { Accept: "image/*" },
            signal: opts.signal,
        });
        return opts.as === "arrayBuffer" ? response.arrayBuffer() : response.blob();
    }
    /**
     * Cancel the task while it waits for its turn; its credits are refunded. A 409 `GenqueueError`
     * once it was handed to a worker or has ended. A cancel retried after its answer was lost
     * answers as the first one did.
     */
    async cancel(opts = {}) {
        let tries = 0;
        try {
            return await this.http.json(this.path, {
                method: "DELETE",
                signal: opts.signal,
                onTry: () => (tries += 1),
            });
        }
        catch (error) {
            // A network error may have hidden the first try's success: the retry then finds it cancelled.
            if (!(error instanceof GenqueueError) || error.status !== 409 || tries < 2)
                throw error;
            const view = await this.status(opts);
            if (view.status !== "cancelled")
                throw error;
            return { task_id: this.id, status: "cancelled", refunded: view.refunded ?? 0 };
        }
    }
}
/** A client of one genqueue, as one token. */
export class GenqueueClient {
    http;
    constructor(opts = {}) {
        this.http = new Transport(opts.baseUrl ?? "", opts.token, opts.fetch, opts.retry ?? {});
    }
    /** Where the client sends its requests ("" for the page's own origin). */
    get baseUrl() {
        return this.http.baseUrl;
    }
    /**
     * Queue a task; answers at once with the task, its place and ETA in `task.submitted`. Its
     * price is charged now (a 402 `GenqueueError` with `balance` and `price` when the balance does
     * not cover it). The submit carries an idempotency key (made here unless given), so a retry
     * after a lost answer returns the first task and charges nothing again.
     */
    async submit(kind, images, prompt = "", opts = {}) {
        const encoded = { person: await encodeImage(images.person) };
        if (images.garment != null)
            encoded["garment"] = await encodeImage(images.garment);
        const body = { kind, prompt, images: encoded };
        if (opts.options !== undefined)
            body["options"] = opts.options;
        if (opts.userId !== undefined)
            body["user_id"] = opts.userId;
        if (opts.webhookUrl !== undefined)
            body["webhook_url"] = opts.webhookUrl;
        if (opts.deadlineSeconds !== undefined)
            body["deadline_seconds"] = opts.deadlineSeconds;
        if (opts.ifLate !== undefined)
            body["if_late"] = opts.ifLate;
        if (opts.maxPrice !== undefined)
            body["max_price"] = opts.maxPrice;
        if (opts.lane !== undefined)
            body["lane"] = opts.lane;
        const response = await this.http.send("/v1/tasks", {
            method: "POST",
            body: JSON.stringify(body),
            headers: {
                "Content-Type": "application/json",
                Accept: "application/json",
                "Idempotency-Key": opts.idempotencyKey ?? newIdempotencyKey(),
            },
            signal: opts.signal,
        });
        const submitted = (await response.json());
        const replayed = response.headers.get("Idempotent-Replayed") === "true";
        return new Task(this.http, submitted.task_id, submitted, replayed);
    }
    /** A task by its id (one submitted earlier, or by another client). */
    task(id) {
        return new Task(this.http, id);
    }
    /** The caller's balance and newest ledger entries (a service or admin token: `userId`'s). */
    me(opts = {}) {
        const query = opts.userId === undefined ? "" : `?user_id=${encodeURIComponent(opts.userId)}`;
        return this.http.json(`/v1/me${query}`, { signal: opts.signal });
    }
    /** Submit, follow the task to its end, and fetch its image when it succeeded. */
    async submitAndWait(kind, images, prompt = "", opts = {}) {
        const task = await this.submit(kind, images, prompt, opts);
        const view = await task.wait({ signal: opts.signal, reconnects: opts.reconnects });
        const image = view.status === "succeeded" ? await task.result({ signal: opts.signal }) : null;
        return { task, view, image };
    }
}
