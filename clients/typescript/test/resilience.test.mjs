// What the client does when the network or the server fails it, against a live genqueue: a watch
// stream dropped mid-message resumes with Last-Event-ID, a submit whose answer was lost is sent
// again under its idempotency key and charged once, a 503 is waited out after its Retry-After.
import assert from "node:assert/strict";
import { test } from "node:test";

import { GenqueueError } from "../dist/genqueue-client.js";
import { CROWD, PHOTO, SKIP, URL, clientOf, crowd, idParts, tokenOf, until } from "./helpers.mjs";

/** The platform's fetch, with every call's URL, method and headers recorded in `calls`. */
function recording(calls, step = (input, init) => fetch(input, init)) {
  return async (input, init) => {
    calls.push({ url: input, method: init.method, headers: { ...init.headers }, body: init.body, at: Date.now() });
    return step(input, init, calls.length);
  };
}

/** `response` with a body that ends in a network error in the middle of its third message. */
function droppedInThirdMessage(response) {
  const reader = response.body.getReader();
  const seen = [];
  let sent = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      seen.push(...value);
      // The ends of the messages so far: blocks with a field, not the keep-alive comments (": ping").
      const ends = [];
      let start = 0;
      for (let i = 1; i < seen.length; i++) {
        if (seen[i - 1] !== 10 || seen[i] !== 10) continue;
        if (seen[start] !== 58) ends.push(i + 1); // 58 is ":"
        start = i + 1;
      }
      if (ends.length < 3) {
        controller.enqueue(value);
        sent = seen.length;
        return;
      }
      const cut = ends[1] + Math.floor((ends[2] - ends[1]) / 2); // half of the third message
      if (cut > sent) controller.enqueue(Uint8Array.from(seen.slice(sent, cut)));
      await reader.cancel();
      controller.error(new TypeError("network error: the connection was reset"));
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

test("a watch stream dropped mid-message resumes with Last-Event-ID: nothing lost, nothing repeated", { skip: SKIP }, async () => {
  await crowd(CROWD.slice(30, 60));
  const calls = [];
  const dave = clientOf("dave", {
    fetch: recording(calls, async (input, init) => {
      const response = await fetch(input, init);
      const watches = calls.filter((c) => c.url.endsWith("/watch")).length;
      return input.endsWith("/watch") && watches === 1 ? droppedInThirdMessage(response) : response;
    }),
  });
  const task = await dave.submit("photography", { person: PHOTO }, "resume me");
  assert.ok(task.submitted.position >= 10, JSON.stringify(task.submitted));
  const ids = [];
  const views = [];
  for await (const view of task.watch({ signal: AbortSignal.timeout(90_000) })) {
    ids.push(task.lastEventId);
    views.push(view);
  }
  const watches = calls.filter((c) => c.url.endsWith("/watch"));
  assert.ok(watches.length >= 2, `${watches.length} watch requests`);
  assert.equal(watches[0].headers["Last-Event-ID"], undefined);
  // The reconnect asked for what came after the second message: the third, cut off, was not delivered.
  assert.equal(watches[1].headers["Last-Event-ID"], ids[1]);
  // A message id names the state it reports (events seen, position, stage), and a stage may come
  // back (starting, then waiting_for_quota when another task took the free place, then starting):
  // a repeat is two messages in a row with one id, above all the first after the reconnect.
  assert.notEqual(ids[2], ids[1], `the reconnect repeated a message: ${ids.join(" ")}`);
  ids.slice(1).forEach((id, i) => assert.notEqual(id, ids[i], `a message repeated: ${ids.join(" ")}`));
  assert.equal(views.at(-1).status, "succeeded");
  const seen = ids.map((id) => idParts(id)[0]);
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b), ids.join(" "));
  const positions = views.filter((v) => v.stage === "waiting" && v.position != null).map((v) => v.position);
  assert.deepEqual(positions, [...positions].sort((a, b) => b - a), positions.join(" "));
  assert.ok(new Set(positions).size >= 3, positions.join(" "));
});

test("a submit whose answer was lost is sent again under its key and charged once", { skip: SKIP }, async () => {
  const calls = [];
  let first = null;
  const erin = clientOf("erin", {
    fetch: recording(calls, async (input, init, n) => {
      const response = await fetch(input, init);
      if (init.method === "POST" && n === 1) {
        first = await response.json(); // the server took it and answered: the answer is lost
        throw new TypeError("fetch failed: the connection was reset");
      }
      return response;
    }),
  });
  const before = await clientOf("erin").me();
  const task = await erin.submit("photography", { person: PHOTO }, "charged once");
  const posts = calls.filter((c) => c.method === "POST");
  assert.equal(posts.length, 2);
  assert.equal(posts[0].headers["Idempotency-Key"], posts[1].headers["Idempotency-Key"]);
  assert.match(posts[0].headers["Idempotency-Key"], /^[0-9a-f-]{36}$/);
  assert.equal(posts[0].body, posts[1].body);
  assert.equal(first.task_id, task.id);
  assert.equal(task.replayed, true);
  const after = await clientOf("erin").me();
  assert.equal(after.charged - before.charged, 1);
  assert.equal(after.balance, before.balance - 1);
  const { tasks } = await (await fetch(`${URL}/v1/tasks`, { headers: { Authorization: `Bearer ${tokenOf("erin")}` } })).json();
  assert.deepEqual(tasks.map((t) => t.task_id), [task.id]);
});

test("a 503 is waited out after its Retry-After; one asking for longer than the client waits is thrown", { skip: SKIP }, async () => {
  const admin = { Authorization: `Bearer ${tokenOf("admin")}`, "Content-Type": "application/json" };
  const intake = (what, body = {}) =>
    fetch(`${URL}/v1/admin/intake/${what}`, { method: "POST", headers: admin, body: JSON.stringify(body) }).then((r) => {
      assert.equal(r.status, 200, `intake ${what}: ${r.status}`);
    });
  const answers = [];
  const frank = clientOf("frank", {
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      answers.push({ status: response.status, retryAfter: response.headers.get("Retry-After"), at: Date.now() });
      return response;
    },
  });
  await intake("pause", { reason: "client test", retry_after_seconds: 1 });
  try {
    const submitting = frank.submit("photography", { person: PHOTO }, "after the pause");
    await until(() => answers.length >= 1, 10_000, "the first answer");
    await intake("resume");
    const task = await submitting;
    assert.deepEqual(answers[0], { ...answers[0], status: 503, retryAfter: "1" });
    assert.equal(answers.at(-1).status, 202);
    assert.ok(answers[1].at - answers[0].at >= 900, `retried after ${answers[1].at - answers[0].at} ms`);
    assert.equal((await task.status()).task_id, task.id);

    await intake("pause", { reason: "client test", retry_after_seconds: 60 });
    answers.length = 0;
    const started = Date.now();
    const refused = await frank.submit("photography", { person: PHOTO }).then(() => assert.fail("accepted"), (e) => e);
    assert.ok(refused instanceof GenqueueError, String(refused));
    assert.equal(refused.status, 503);
    assert.equal(refused.retryAfter, 60);
    assert.equal(refused.problem.intake, "paused");
    assert.equal(answers.length, 1);
    assert.ok(Date.now() - started < 5000);
    assert.equal((await frank.me()).charged, 1);
  } finally {
    await intake("resume");
  }
});
