/**
 * genqueue's errors: every refusal of the API is an RFC 9457 problem, thrown as a
 * `GenqueueError` that carries the problem's fields.
 */
/**
 * A refusal of the API: its status and the problem's fields. `balance` and `price` come with a 402
 * (insufficient credits), `retryAfter` (seconds) with a 429 or a 503, `errors` with a 422; a 409 of
 * type `/problems/deadline-unreachable` carries `etaSeconds`, `etaP90Seconds`, `deadlineSeconds` and
 * `minDeadlineSeconds` (the shortest deadline that would be met) and, with fallback routes,
 * `alternatives` (dearer routes that would meet it); `problem` is the whole body, for
 * the members this class does not name (`waiting`, `blocked_reason`, …).
 */
export class GenqueueError extends Error {
    status;
    type;
    title;
    detail;
    instance;
    errors;
    balance;
    price;
    retryAfter;
    etaSeconds;
    etaP90Seconds;
    deadlineSeconds;
    minDeadlineSeconds;
    alternatives;
    problem;
    constructor(status, problem, retryAfter) {
        const title = problem.title ?? `HTTP ${status}`;
        const detail = problem.detail ?? "";
        super(detail ? `${status} ${title}: ${detail}` : `${status} ${title}`);
        this.name = "GenqueueError";
        this.status = status;
        this.type = problem.type ?? "about:blank";
        this.title = title;
        this.detail = detail;
        this.instance = problem.instance;
        this.errors = Array.isArray(problem.errors) ? problem.errors : [];
        this.balance = typeof problem.balance === "number" ? problem.balance : undefined;
        this.price = typeof problem.price === "number" ? problem.price : undefined;
        const wait = typeof problem.retry_after === "number" ? problem.retry_after : retryAfter;
        this.retryAfter = wait;
        this.etaSeconds = numberOf(problem.eta_seconds);
        this.etaP90Seconds = numberOf(problem.eta_p90_seconds);
        this.deadlineSeconds = numberOf(problem.deadline_seconds);
        this.minDeadlineSeconds = numberOf(problem.min_deadline_seconds);
        this.alternatives = Array.isArray(problem.alternatives) ? problem.alternatives : undefined;
        this.problem = problem;
    }
}
/** A problem member that is a number, else undefined. */
function numberOf(value) {
    return typeof value === "number" ? value : undefined;
}
/**
 * The seconds a `Retry-After` header asks to wait: a number of seconds or an HTTP date;
 * undefined when absent or unreadable.
 */
export function retryAfterSeconds(header, now = Date.now()) {
    if (header === null || header.trim() === "")
        return undefined;
    const text = header.trim();
    if (/^\d+$/.test(text))
        return Number(text);
    const at = Date.parse(text);
    return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}
/** The `GenqueueError` for a response that is not a success, from its problem body if it has one. */
export async function errorOf(response) {
    const wait = retryAfterSeconds(response.headers.get("Retry-After"));
    const text = await response.text().catch(() => "");
    let problem = {};
    try {
        const parsed = JSON.parse(text);
        if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed))
            problem = parsed;
        else
            problem = { detail: text };
    }
    catch {
        problem = { detail: text.slice(0, 500) };
    }
    problem.title ??= response.statusText || `HTTP ${response.status}`;
    return new GenqueueError(response.status, problem, wait);
}
