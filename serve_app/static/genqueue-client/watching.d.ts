/**
 * A task's watch stream read with `fetch` (so that the bearer token is sent: `EventSource`
 * cannot send headers), opened again with `Last-Event-ID` when it drops or goes quiet.
 */
import { type Transport } from "./http.js";
import { type TaskView } from "./types.js";
/** How to follow a task. */
export interface WatchOptions {
    signal?: AbortSignal | undefined;
    /** Resume after this update (a `task.lastEventId`): only what changed since is sent. */
    lastEventId?: string | undefined;
    /** How many times in a row a stream that drops before an update is opened again: 10. */
    reconnects?: number | undefined;
    /**
     * A stream silent this long (ms) is taken for dead and opened again: 45 s (the server sends a
     * comment every 15 s).
     */
    idleTimeoutMs?: number | undefined;
}
/** An update of the task and its message id. */
export interface Update {
    id: string;
    view: TaskView;
}
/** The watch stream of the task at `path`: its updates until the terminal one. */
export declare function watchTask(http: Transport, path: string, opts: WatchOptions): AsyncGenerator<Update, void, undefined>;
