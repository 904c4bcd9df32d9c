/**
 * Requests to genqueue: the bearer token, and retries of what is safe to send again (every
 * request this client makes: reads, a cancel, and a submit under its idempotency key).
 */
import { GenqueueError, errorOf } from "./errors.js";
export const DEFAULT_RETRY = {
    retries: 3,
    backoffMs: 500,
    maxBackoffMs: 8000,
    maxRetryAfterSeconds: 30,
};
/** The statuses that say "not now": a busy or unavailable server, or a gateway in front of it. */
const RETRIED = new Set([429, 502, 503, 504]);
/** Whether `error` is an abort (the caller's signal, or a timeout signal), which is never retried. */
export function isAbort(error) {
    return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}
/** Wait `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
        if (signal?.aborted) {
            reject(signal.reason);
            return;
        }
        const done = () => {
            signal?.removeEventListener("abort", aborted);
            resolve();
        };
        const timer = setTimeout(done, Math.max(0, ms));
        function aborted() {
            clearTimeout(timer);
            reject(signal?.reason);
        }
        signal?.addEventListener("abort", aborted, { once: true });
    });
}
/** The base URL, the token, the `fetch` and the retry policy of a client. */
export class Transport {
    baseUrl;
    retry;
    token;
    fetcher;
    constructor(baseUrl, token, fetcher, retry) {
        this.baseUrl = baseUrl.replace(/\/+$/, "");
        this.token = token;
        const platform = fetcher ?? globalThis.fetch;
        if (typeof platform !== "function")
            throw new TypeError("no fetch: pass one as the `fetch` option");
        // Called as a plain function: a browser's fetch refuses to run as a method of another object.
        this.fetcher = (input, init) => platform(input, init);
        this.retry = { ...DEFAULT_RETRY, ...retry };
    }
    /** The absolute (or, with an empty base URL, origin-relative) URL of an API path. */
    url(path) {
        return this.baseUrl + path;
    }
    /** The request headers: `Authorization` when there is a token, and `extra`. */
    headers(extra = {}) {
        const token = typeof this.token === "function" ? this.token() : this.token;
        const trimmed = (token ?? "").trim();
        return trimmed ? { Authorization: `Bearer ${trimmed}`, ...extra } : { ...extra };
    }
    /** The wait before try `attempt + 1` after a network error or a 5xx without Retry-After (ms). */
    backoff(attempt) {
        const ceiling = Math.min(this.retry.maxBackoffMs, this.retry.backoffMs * 2 ** attempt);
        return ceiling * (0.5 + Math.random() / 2);
    }
    /**
     * A successful response to `path`, after retrying network errors, 502, 503, 504 and 429 (a
     * 429 or 503 after its Retry-After, when that is at most `maxRetryAfterSeconds`); throws a
     * `GenqueueError` for any other refusal, or for the last one once the tries are spent, and
     * the last network error.
     */
    async send(path, call = {}, retries = this.retry.retries) {
        const { signal } = call;
        for (let attempt = 0;; attempt++) {
            let wait;
            try {
                const init = { method: call.method ?? "GET", headers: this.headers(call.headers) };
                if (call.body !== undefined)
                    init.body = call.body;
                if (signal !== undefined)
                    init.signal = signal;
                call.onTry?.();
                const response = await this.fetcher(this.url(path), init);
                if (response.ok)
                    return response;
                const error = await errorOf(response);
                if (!RETRIED.has(response.status) || attempt >= retries)
                    throw error;
                const after = error.retryAfter;
                if (after !== undefined && after > this.retry.maxRetryAfterSeconds)
                    throw error;
                wait = after !== undefined ? after * 1000 : this.backoff(attempt);
            }
            catch (error) {
                if (error instanceof GenqueueError || isAbort(error) || signal?.aborted || attempt >= retries) {
                    throw error;
                }
                wait = this.backoff(attempt); // the request may or may not have arrived: it is safe either way
            }
            await sleep(wait, signal);
        }
    }
    /** The JSON answer of `path`. */
    async json(path, call = {}) {
        const response = await this.send(path, { ...call, headers: { Accept: "application/json", ...call.headers } });
        return (await response.json());
    }
}
