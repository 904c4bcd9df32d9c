/**
 * Requests to genqueue: the bearer token, and retries of what is safe to send again (every
 * request this client makes: reads, a cancel, and a submit under its idempotency key).
 */
/** A `fetch`: the platform's, or a wrapper of it (a proxy agent, a test's). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;
/** The bearer token, or a function that reads it at each request (a field of a page, say). */
export type TokenSource = string | (() => string | null | undefined) | null | undefined;
/** When to try a request again. */
export interface RetryOptions {
    /** Tries after the first one: 3 unless given; 0 turns retries off. */
    retries: number;
    /** The first wait after a network error or a 5xx without Retry-After, doubled each time (ms). */
    backoffMs: number;
    /** The longest such wait (ms). */
    maxBackoffMs: number;
    /**
     * The longest `Retry-After` (seconds) a 429 or 503 is waited out for; one asking for longer
     * is thrown at once as a `GenqueueError` with its `retryAfter`.
     */
    maxRetryAfterSeconds: number;
}
export declare const DEFAULT_RETRY: RetryOptions;
/** One request's method, body, headers and signal. */
export interface Call {
    method?: string;
    body?: string;
    headers?: Record<string, string>;
    signal?: AbortSignal | undefined;
    /** Called before each try. */
    onTry?: () => void;
}
/** Whether `error` is an abort (the caller's signal, or a timeout signal), which is never retried. */
export declare function isAbort(error: unknown): boolean;
/** Wait `ms`, or reject with the signal's reason when it aborts first. */
export declare function sleep(ms: number, signal?: AbortSignal): Promise<void>;
/** The base URL, the token, the `fetch` and the retry policy of a client. */
export declare class Transport {
    readonly baseUrl: string;
    readonly retry: RetryOptions;
    private readonly token;
    private readonly fetcher;
    constructor(baseUrl: string, token: TokenSource, fetcher: FetchLike | undefined, retry: Partial<RetryOptions>);
    /** The absolute (or, with an empty base URL, origin-relative) URL of an API path. */
    url(path: string): string;
    /** The request headers: `Authorization` when there is a token, and `extra`. */
    headers(extra?: Record<string, string>): Record<string, string>;
    /** The wait before try `attempt + 1` after a network error or a 5xx without Retry-After (ms). */
    backoff(attempt: number): number;
    /**
     * A successful response to `path`, after retrying network errors, 502, 503, 504 and 429 (a
     * 429 or 503 after its Retry-After, when that is at most `maxRetryAfterSeconds`); throws a
     * `GenqueueError` for any other refusal, or for the last one once the tries are spent, and
     * the last network error.
     */
    send(path: string, call?: Call, retries?: number): Promise<Response>;
    /** The JSON answer of `path`. */
    json<T>(path: string, call?: Call): Promise<T>;
}
