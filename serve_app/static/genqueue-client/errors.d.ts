/**
 * genqueue's errors: every refusal of the API is an RFC 9457 problem, thrown as a
 * `GenqueueError` that carries the problem's fields.
 */
/** A field of the request that broke the API's rules, as a 422's `errors` names it. */
export interface FieldError {
    field: string;
    message: string;
}
/** The body of a problem response (`application/problem+json`). */
export interface Problem {
    type?: string;
    title?: string;
    status?: number;
    detail?: string;
    instance?: string;
    errors?: FieldError[] | null;
    balance?: number;
    price?: number;
    retry_after?: number;
    eta_seconds?: number;
    eta_p90_seconds?: number;
    deadline_seconds?: number;
    min_deadline_seconds?: number;
    alternatives?: Alternative[];
    [member: string]: unknown;
}
/** With fallback routes: a dearer route whose ETA p90 would meet the deadline, at its `max_price`. */
export interface Alternative {
    route: string;
    max_price: number;
    eta_p90_seconds: number;
}
/**
 * A refusal of the API: its status and the problem's fields. `balance` and `price` come with a 402
 * (insufficient credits), `retryAfter` (seconds) with a 429 or a 503, `errors` with a 422; a 409 of
 * type `/problems/deadline-unreachable` carries `etaSeconds`, `etaP90Seconds`, `deadlineSeconds` and
 * `minDeadlineSeconds` (the shortest deadline that would be met) and, with fallback routes,
 * `alternatives` (dearer routes that would meet it); `problem` is the whole body, for
 * the members this class does not name (`waiting`, `blocked_reason`, …).
 */
export declare class GenqueueError extends Error {
    readonly status: number;
    readonly type: string;
    readonly title: string;
    readonly detail: string;
    readonly instance: string | undefined;
    readonly errors: FieldError[];
    readonly balance: number | undefined;
    readonly price: number | undefined;
    readonly retryAfter: number | undefined;
    readonly etaSeconds: number | undefined;
    readonly etaP90Seconds: number | undefined;
    readonly deadlineSeconds: number | undefined;
    readonly minDeadlineSeconds: number | undefined;
    readonly alternatives: Alternative[] | undefined;
    readonly problem: Problem;
    constructor(status: number, problem: Problem, retryAfter?: number);
}
/**
 * The seconds a `Retry-After` header asks to wait: a number of seconds or an HTTP date;
 * undefined when absent or unreadable.
 */
export declare function retryAfterSeconds(header: string | null, now?: number): number | undefined;
/** The `GenqueueError` for a response that is not a success, from its problem body if it has one. */
export declare function errorOf(response: Response): Promise<GenqueueError>;
