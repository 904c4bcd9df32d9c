/** The shapes of genqueue's API, as its OpenAPI schema (`/openapi.json`) declares them. */
/** The statuses after which a task never changes. */
export const TERMINAL = ["succeeded", "failed", "cancelled", "expired"];
