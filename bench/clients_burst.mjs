// The TypeScript client's burst for bench/clients_burst.py: simulated users who press generate at
// the same instant, each submitting once through GenqueueClient (clients/typescript/dist) and
// following its task over Server-Sent Events to its end, retries off. Prints one JSON line: submits
// accepted, tasks succeeded, submit latency p50 and p99 (ms, refusals included), makespan (the
// server's clock: first accepted submit to last end), wall (the client's: press to last end seen),
// the refusals by reason; the figures as serve_app/cli/loadreport.py sums them up.
//
//   GQBENCH_URL         genqueue's base URL
//   GQBENCH_TOKEN       a service token: it submits for each user under its user_id
//   GQBENCH_IMAGES      a directory holding user i's photo as <i>.png
//   GQBENCH_USERS       how many users (100)
//   GQBENCH_KIND        the kind of every task (photography)
//   GQBENCH_DEADLINE_S  seconds the burst may take, from the press to the last end (300)
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

import { GenqueueClient, GenqueueError } from "../clients/typescript/dist/genqueue-client.js";

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

const users = Number(env("GQBENCH_USERS", "100"));
const kind = env("GQBENCH_KIND", "photography");
const deadlineMs = 1000 * Number(env("GQBENCH_DEADLINE_S", "300"));
const client = new GenqueueClient({ baseUrl: env("GQBENCH_URL"), token: env("GQBENCH_TOKEN"), retry: { retries: 0 } });
const dir = env("GQBENCH_IMAGES");
// Read before anyone presses: each user has its photo ready.
const photos = await Promise.all(Array.from({ length: users }, (_, i) => readFile(join(dir, `${i}.png`))));

// As serve_app/cli/burst.py names its simulated users and what they ask for (`user_id`, `prompt`).
const userId = (i) => `user-${i}`;
const prompt = (i) => `studio portrait, look ${i % 7}`;

/** The nearest-rank q-th percentile (0-100), as serve_app/cli/burst.py's `percentile`; 0 for none. */
function percentile(values, q) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((q / 100) * sorted.length) - 1)];
}

const round = (x, digits) => Number(x.toFixed(digits));

/** One user: wait for the press, submit, follow the task to its end; what it saw. */
async function user(i, press, signal) {
  await press;
  const run = { pressed: Date.now() / 1000, status: 0, submitMs: null, reason: "", view: null, seenEnd: 0 };
  const t0 = performance.now();
  let task;
  try {
    task = await client.submit(kind, { person: photos[i] }, prompt(i), { userId: userId(i), signal });
  } catch (e) {
    if (e instanceof GenqueueError) {
      [run.status, run.submitMs, run.reason] = [e.status, performance.now() - t0, `${e.status} ${e.title}`.trim()];
    } else {
      run.reason = `no answer: ${e?.name ?? e}`;
    }
    return run;
  }
  [run.status, run.submitMs, run.view] = [202, performance.now() - t0, task.submitted];
  try {
    run.view = await task.wait({ signal });
    run.seenEnd = Date.now() / 1000;
  } catch {
    // Not followed to its end: it counts as accepted, not succeeded.
  }
  return run;
}

let release;
const press = new Promise((resolve) => (release = resolve));
const signal = AbortSignal.timeout(deadlineMs);
const pending = Array.from({ length: users }, (_, i) => user(i, press, signal));
release(); // every user is waiting on the same promise: they all go on this turn
const runs = await Promise.all(pending);

const accepted = runs.filter((r) => r.status === 202);
const views = accepted.map((r) => r.view).filter(Boolean);
const stamps = (name) => views.map((v) => v[name]).filter((t) => t !== null && t !== undefined);
const [submitted, finished] = [stamps("submitted_at"), stamps("finished_at")];
const ends = runs.filter((r) => r.seenEnd).map((r) => r.seenEnd);
const latencies = runs.filter((r) => r.submitMs !== null).map((r) => r.submitMs / 1000);
const rejected = {};
for (const r of runs.filter((r) => r.status !== 202)) rejected[r.reason] = (rejected[r.reason] ?? 0) + 1;
const figures = {
  accepted: accepted.length,
  succeeded: views.filter((v) => v.status === "succeeded").length,
  submit_p50_ms: round(1000 * percentile(latencies, 50), 1),
  submit_p99_ms: round(1000 * percentile(latencies, 99), 1),
  makespan_s: submitted.length && finished.length ? round(Math.max(...finished) - Math.min(...submitted), 3) : 0,
  wall_s: ends.length ? round(Math.max(...ends) - Math.min(...runs.map((r) => r.pressed)), 3) : 0,
  rejected,
};
// Written before leaving: keep-alive connections would keep the process waiting.
process.stdout.write(`${JSON.stringify(figures)}\n`, () => process.exit(0));
