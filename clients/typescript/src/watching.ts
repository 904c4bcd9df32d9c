/**
 * A task's watch stream read with `fetch` (so that the bearer token is sent: `EventSource`
 * cannot send headers), opened again with `Last-Event-ID` when it drops or goes quiet.
 */

import { GenqueueError } from "./errors.js";
import { sleep, type Transport } from "./http.js";
import { EventStreamParser, readEvents } from "./sse.js";
import { TERMINAL, type TaskView } from "./types.js";

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

/** The wait before opening a stream again, unless the server asked for another (`retry:`). */
const RECONNECT_MS = 1000;
const MAX_RECONNECT_MS = 30_000;
const IDLE_TIMEOUT_MS = 45_000;

/** The watch stream of the task at `path`: its updates until the terminal one. */
export async function* watchTask(
  http: Transport,
  path: string,
  opts: WatchOptions,
): AsyncGenerator<Update, void, undefined> {
  const watching = new AbortController();
  const outer = opts.signal;
  const stop = (): void => watching.abort(outer?.reason);
  if (outer?.aborted) stop();
  else outer?.addEventListener("abort", stop, { once: true });
  const signal = watching.signal;
  const limit = opts.reconnects ?? 10;
  const idle = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  let lastId = opts.lastEventId ?? "";
  let delay = RECONNECT_MS;
  let failures = 0;
  try {
    for (;;) {
      const parser = new EventStreamParser(lastId);
      const connection = new AbortController();
      const drop = (): void => connection.abort(signal.reason);
      signal.addEventListener("abort", drop, { once: true });
      let quiet: ReturnType<typeof setTimeout> | undefined;
      const heardFrom = (): void => {
        clearTimeout(quiet);
        quiet = setTimeout(() => connection.abort(new Error(`no byte for ${idle} ms`)), idle);
      };
      let heard = false;
      let failure: unknown;
      try {
        const headers: Record<string, string> = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        heardFrom();
        const response = await http.send(`${path}/watch`, { headers, signal: connection.signal });
        if (response.body === null) throw new TypeError("the watch answer has no body");
        for await (const event of readEvents(response.body, parser, heardFrom)) {
          lastId = parser.lastEventId;
          if (event.type !== "task" && event.type !== "message") continue;
          const view = parseView(event.data);
          heard = true;
          failures = 0;
          yield { id: event.lastEventId, view };
          if (TERMINAL.includes(view.status)) return;
        }
      } catch (error) {
        // A refusal (401, 404, …), a caller's abort or an unreadable update ends the watch;
        // a dropped or silent connection is opened again.
        if (error instanceof GenqueueError || error instanceof SyntaxError || signal.aborted) throw error;
        failure = error;
      } finally {
        clearTimeout(quiet);
        signal.removeEventListener("abort", drop);
        connection.abort();
      }
      lastId = parser.lastEventId;
      if (parser.retry !== undefined) delay = parser.retry;
      if (!heard && failure === undefined) {
        // The server closed the stream with nothing new since `lastId`: the task may have ended.
        const view = await http.json<TaskView>(path, { signal });
        if (TERMINAL.includes(view.status)) {
          yield { id: lastId, view };
          return;
        }
      }
      if (!heard && ++failures > limit) {
        throw failure ?? new Error(`the watch of ${path} closed ${failures} times without an update`);
      }
      await sleep(Math.min(MAX_RECONNECT_MS, delay * 2 ** Math.max(0, failures - 1)), signal);
    }
  } finally {
    outer?.removeEventListener("abort", stop);
    watching.abort();
  }
}

function parseView(data: string): TaskView {
  const view: unknown = JSON.parse(data);
  if (view === null || typeof view !== "object" || typeof (view as TaskView).status !== "string") {
    throw new SyntaxError(`a watch update is not a task view: ${data.slice(0, 200)}`);
  }
  return view as TaskView;
}
