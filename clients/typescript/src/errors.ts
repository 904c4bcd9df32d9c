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
export class GenqueueError extends Error {
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

  constructor(status: number, problem: Problem, retryAfter?: number) {
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
function numberOf(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

/**
 * The seconds a `Retry-After` header asks to wait: a number of seconds or an HTTP date;
 * undefined when absent or unreadable.
 */
export function retryAfterSeconds(header: string | null, now: number = Date.now()): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/** The `GenqueueError` for a response that is not a success, from its problem body if it has one. */
export async function errorOf(response: Response): Promise<GenqueueError> {
  const wait = retryAfterSeconds(response.headers.get("Retry-After"));
  const text = await response.text().catch(() => "");
  let problem: Problem = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed as Problem;
    else problem = { detail: text };
  } catch {
    problem = { detail: text.slice(0, 500) };
  }
  problem.title ??= response.statusText || `HTTP ${response.status}`;
  return new GenqueueError(response.status, problem, wait);
}
