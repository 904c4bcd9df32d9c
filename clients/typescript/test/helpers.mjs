// What the tests share: the genqueue they talk to (started by tests/e2e/test_ts_client.py, which
// passes its URL, tokens and a sample photo in the environment), clients, and a crowd of tasks.
import { readFileSync } from "node:fs";

import { GenqueueClient } from "../dist/genqueue-client.js";

export const URL = process.env.GQTEST_URL ?? "";
/** Why the live tests cannot run here, or false when they can. */
export const SKIP = URL ? false : "no GQTEST_URL: run through tests/e2e/test_ts_client.py, which starts genqueue";
const TOKENS = JSON.parse(process.env.GQTEST_TOKENS ?? "{}");
/** A PNG photo the API accepts. */
export const PHOTO = process.env.GQTEST_IMAGE ? new Uint8Array(readFileSync(process.env.GQTEST_IMAGE)) : null;
/** The users the service token submits for, each granted credits for one task per test. */
export const CROWD = (process.env.GQTEST_CROWD ?? "").split(",").filter(Boolean);

/** The token of `name` (a user named so, or `service` and `admin`). */
export function tokenOf(name) {
  const token = TOKENS[name];
  if (!token) throw new Error(`no token ${name} in GQTEST_TOKENS`);
  return token;
}

/** A client of the live genqueue as `name`, with `opts` (a `fetch`, a retry policy). */
export function clientOf(name, opts = {}) {
  return new GenqueueClient({ baseUrl: URL, token: tokenOf(name), ...opts });
}

/** Whether `bytes` begin as a PNG, JPEG or WebP does. */
export function isImage(bytes) {
  const head = Array.from(bytes.subarray(0, 12));
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => head[i] === b);
  const jpeg = head[0] === 0xff && head[1] === 0xd8;
  const webp = String.fromCharCode(...head.slice(0, 4)) === "RIFF" && String.fromCharCode(...head.slice(8, 12)) === "WEBP";
  return png || jpeg || webp;
}

/**
 * Tasks of `users` (one each, submitted at once by the service token) queued ahead of what comes
 * next, so that it waits in line behind them.
 */
export async function crowd(users) {
  const service = clientOf("service");
  const tasks = await Promise.all(users.map((u) => service.submit("photography", { person: PHOTO }, "crowd", { userId: u })));
  return tasks;
}

/** Wait until `check()` is truthy, polling every 50 ms, or fail after `ms`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The `[seen, position]` of a watch message id (`<events seen>-<position>-<stage>`). */
export function idParts(id) {
  const [seen, position] = id.split("-");
  return [Number(seen), position ? Number(position) : null];
}
