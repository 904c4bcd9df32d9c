/**
 * Requests to genqueue: the bearer token, and retries of what is safe to send again (every
 * request this client makes: reads, a cancel, and a submit under its idempotency key).
 */

import { GenqueueError, errorOf } from "./errors.js";

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

export const DEFAULT_RETRY: RetryOptions = {
  retries: 3,
  backoffMs: 500,
  maxBackoffMs: 8000,
  maxRetryAfterSeconds: 30,
};

/** The statuses that say "not now": a busy or unavailable server, or a gateway in front of it. */
const RETRIED = new Set([429, 502, 503, 504]);

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
export function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}

/** Wait `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const done = (): void => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    function aborted(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/** The base URL, the token, the `fetch` and the retry policy of a client. */
export class Transport {
  readonly baseUrl: string;
  readonly retry: RetryOptions;
  private readonly token: TokenSource;
  private readonly fetcher: FetchLike;

  constructor(baseUrl: string, token: TokenSource, fetcher: FetchLike | undefined, retry: Partial<RetryOptions>) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    const platform = fetcher ?? globalThis.fetch;
    if (typeof platform !== "function") throw new TypeError("no fetch: pass one as the `fetch` option");
    // Called as a plain function: a browser's fetch refuses to run as a method of another object.
    this.fetcher = (input, init) => platform(input, init);
    this.retry = { ...DEFAULT_RETRY, ...retry };
  }

  /** The absolute (or, with an empty base URL, origin-relative) URL of an API path. */
  url(path: string): string {
    return this.baseUrl + path;
  }

  /** The request headers: `Authorization` when there is a token, and `extra`. */
  headers(extra: Record<string, string> = {}): Record<string, string> {
    const token = typeof this.token === "function" ? this.token() : this.token;
    const trimmed = (token ?? "").trim();
    return trimmed ? { Authorization: `Bearer ${trimmed}`, ...extra } : { ...extra };
  }

  /** The wait before try `attempt + 1` after a network error or a 5xx without Retry-After (ms). */
  backoff(attempt: number): number {
    const ceiling = Math.min(this.retry.maxBackoffMs, this.retry.backoffMs * 2 ** attempt);
    return ceiling * (0.5 + Math.random() / 2);
  }

  /**
   * A successful response to `path`, after retrying network errors, 502, 503, 504 and 429 (a
   * 429 or 503 after its Retry-After, when that is at most `maxRetryAfterSeconds`); throws a
   * `GenqueueError` for any other refusal, or for the last one once the tries are spent, and
   * the last network error.
   */
  async send(path: string, call: Call = {}, retries = this.retry.retries): Promise<Response> {
    const { signal } = call;
    for (let attempt = 0; ; attempt++) {
      let wait: number;
      try {
        const init: RequestInit = { method: call.method ?? "GET", headers: this.headers(call.headers) };
        if (call.body !== undefined) init.body = call.body;
        if (signal !== undefined) init.signal = signal;
        call.onTry?.();
        const response = await this.fetcher(this.url(path), init);
        if (response.ok) return response;
        const error = await errorOf(response);
        if (!RETRIED.has(response.status) || attempt >= retries) throw error;
        const after = error.retryAfter;
        if (after !== undefined && after > this.retry.maxRetryAfterSeconds) throw error;
        wait = after !== undefined ? after * 1000 : this.backoff(attempt);
      } catch (error) {
        if (error instanceof GenqueueError || isAbort(error) || signal?.aborted || attempt >= retries) {
          throw error;
        }
        wait = this.backoff(attempt); // the request may or may not have arrived: it is safe either way
      }
      await sleep(wait, signal);
    }
  }

  /** The JSON answer of `path`. */
  async json<T>(path: string, call: Call = {}): Promise<T> {
    const response = await this.send(path, { ...call, headers: { Accept: "application/json", ...call.headers } });
    return (await response.json()) as T;
  }
}
