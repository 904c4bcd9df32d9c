/** The shapes of genqueue's API, as its OpenAPI schema (`/openapi.json`) declares them. */
import type { ImageInput } from "./images.js";
/** What to generate: a styled portrait from a selfie, or a garment tried on a person. */
export type Kind = "photography" | "fitting";
/** The aspect ratios the generator accepts. */
export type AspectRatio = "1:1" | "2:3" | "3:2" | "3:4" | "4:3" | "4:5" | "5:4" | "9:16" | "16:9" | "21:9";
/**
 * A task's public status; the last four are terminal. `expired`: its deadline passed before its
 * call could start, and it was refunded.
 */
export type Status = "queued" | "running" | "succeeded" | "failed" | "cancelled" | "expired";
/** The statuses after which a task never changes. */
export declare const TERMINAL: readonly string[];
/** The input images: `garment` is required for `fitting`. */
export interface Images {
    person: ImageInput;
    garment?: ImageInput | null | undefined;
}
/** How to generate; each left out means the provider's default. */
export interface GenerationOptions {
    aspect_ratio?: AspectRatio;
    seed?: number;
}
/** The rest of a submit. */
export interface SubmitOptions {
    options?: GenerationOptions;
    /** Whose task it is: a service or admin token submits for this user. */
    userId?: string;
    /** A URL that gets the task view when the task ends (service and admin tokens). */
    webhookUrl?: string;
    /**
     * The submit's idempotency key; one is made when left out. Give the same key to send the same
     * request again (after a failure the client did not retry) without a second charge.
     */
    idempotencyKey?: string;
    /**
     * Seconds from now (at most 86400) by which the task's upstream call must start; not started by
     * then, it ends `expired` and is refunded. When its ETA already misses that, the submit is a 409
     * `GenqueueError` of type `/problems/deadline-unreachable` with `minDeadlineSeconds` (nothing
     * charged), unless `ifLate` is "accept".
     */
    deadlineSeconds?: number;
    /** When the ETA already misses the deadline: "refuse" (the default: a 409) or "accept" (queue it). */
    ifLate?: "refuse" | "accept";
    /**
     * The most credits the task may cost: it may then be served by a dearer fallback route, and gets
     * back the difference when a cheaper one serves it.
     */
    maxPrice?: number;
    /** The priority lane it rides (service and admin tokens; a user token's tasks ride its own). */
    lane?: string;
    signal?: AbortSignal;
}
/** The answer to a submit. */
export interface Submitted {
    task_id: string;
    status: string;
    position: number | null;
    /** The p50 of the seconds until the task's call starts (null: no pool will serve it). */
    eta_seconds: number | null;
    eta_p90_seconds?: number | null;
    /** The user's credits after the charge (null when credits are off, or on a replay). */
    balance?: number | null;
}
/** Everything a caller may know about a task. */
export interface TaskView {
    task_id: string;
    user_id: string;
    kind: string;
    status: Status | string;
    /** While queued: waiting, waiting_for_quota, starting or blocked. */
    stage?: string | null;
    quota_until?: number | null;
    blocked_reason?: string | null;
    blocked_until?: number | null;
    position?: number | null;
    eta_seconds?: number | null;
    eta_p90_seconds?: number | null;
    attempts?: number;
    submitted_at?: number | null;
    dispatched_at?: number | null;
    started_at?: number | null;
    finished_at?: number | null;
    error?: string | null;
    result_url?: string | null;
    pool?: string | null;
    /** The priority lane it rides (with `[[lanes]]`). */
    lane?: string | null;
    price?: number | null;
    refunded?: number | null;
    [field: string]: unknown;
}
/** The answer to a cancel. */
export interface Cancelled {
    task_id: string;
    status: string;
    refunded: number;
}
/** A user's balance and newest ledger entries. */
export interface Me {
    user_id: string;
    role: string;
    balance: number;
    granted: number;
    charged: number;
    refunded: number;
    ledger: Record<string, unknown>[];
}
