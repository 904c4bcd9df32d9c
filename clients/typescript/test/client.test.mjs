// The client's verbs against a live genqueue: submit, watch, result, submitAndWait, me, cancel,
// and refusals as GenqueueError.
import assert from "node:assert/strict";
import { test } from "node:test";

import { GenqueueClient, GenqueueError, TERMINAL, base64Of } from "../dist/genqueue-client.js";
import { CROWD, PHOTO, SKIP, URL, clientOf, crowd, idParts, isImage } from "./helpers.mjs";

test("a submitted task is watched to succeeded and its result is an image", { skip: SKIP }, async () => {
  const alice = clientOf("alice");
  const before = await alice.me();
  const task = await alice.submit("photography", { person: PHOTO }, "warm film portrait", { options: { seed: 7 } });
  assert.match(task.id, /^[0-9a-f]{32}$/);
  assert.equal(task.submitted.status, "queued");
  assert.equal(task.replayed, false);
  assert.equal(task.submitted.balance, before.balance - 1);
  const views = [];
  for await (const view of task.watch({ signal: AbortSignal.timeout(60_000) })) views.push(view);
  const statuses = views.map((v) => v.status);
  assert.equal(statuses.at(-1), "succeeded", statuses.join(" "));
  assert.ok(statuses.slice(0, -1).every((s) => !TERMINAL.includes(s)), statuses.join(" "));
  assert.ok(views.every((v) => v.task_id === task.id));
  assert.ok(task.lastEventId && idParts(task.lastEventId)[0] >= 3, task.lastEventId);
  const image = await task.result();
  assert.ok(image instanceof Blob);
  assert.match(image.type, /^image\/(png|jpeg|webp)$/);
  assert.ok(isImage(new Uint8Array(await image.arrayBuffer())));
  const bytes = new Uint8Array(await task.result({ as: "arrayBuffer" }));
  assert.equal(bytes.length, image.size);
  assert.equal((await task.status()).status, "succeeded");
  // A fresh watch of an ended task gets its last view and ends.
  const again = [];
  for await (const view of alice.task(task.id).watch()) again.push(view.status);
  assert.deepEqual(again, ["succeeded"]);
});

test("submitAndWait makes a try-on from a Blob and base64, and returns its image", { skip: SKIP }, async () => {
  const bob = clientOf("bob");
  const { task, view, image } = await bob.submitAndWait(
    "fitting",
    { person: new Blob([PHOTO], { type: "image/png" }), garment: base64Of(PHOTO) },
    "try it on",
    { signal: AbortSignal.timeout(60_000) },
  );
  assert.equal(view.status, "succeeded");
  assert.equal(view.kind, "fitting");
  assert.equal(view.price, 2);
  assert.equal(view.task_id, task.id);
  assert.ok(isImage(new Uint8Array(await image.arrayBuffer())));
});

test("me() answers the balance and the ledger", { skip: SKIP }, async () => {
  const me = await clientOf("alice").me();
  assert.equal(me.user_id, "ts-alice");
  assert.equal(me.role, "user");
  assert.equal(me.granted, 20);
  assert.equal(me.balance, me.granted - me.charged + me.refunded);
  assert.ok(Array.isArray(me.ledger) && me.ledger.length >= 1);
  const asService = await clientOf("service").me({ userId: "ts-alice" });
  assert.equal(asService.balance, me.balance);
});

test("a balance that does not cover the price is a 402 GenqueueError with balance and price", { skip: SKIP }, async () => {
  const broke = clientOf("broke");
  for (const [kind, price] of [["photography", 1], ["fitting", 2]]) {
    const images = kind === "fitting" ? { person: PHOTO, garment: PHOTO } : { person: PHOTO };
    const refused = await broke.submit(kind, images, "").then(
      () => assert.fail("accepted"),
      (e) => e,
    );
    assert.ok(refused instanceof GenqueueError, String(refused));
    assert.equal(refused.status, 402);
    assert.equal(refused.title, "Insufficient credits");
    assert.equal(refused.balance, 0);
    assert.equal(refused.price, price);
    assert.match(refused.detail, /credit/);
    assert.equal(refused.problem.status, 402);
    assert.equal(typeof refused.type, "string");
  }
  assert.equal((await broke.me()).charged, 0);
});

test("a wrong or missing token is a 401 GenqueueError", { skip: SKIP }, async () => {
  for (const token of ["gq_not-a-real-token", undefined]) {
    const stranger = new GenqueueClient({ baseUrl: URL, token });
    for (const call of [() => stranger.me(), () => stranger.submit("photography", { person: PHOTO })]) {
      const refused = await call().then(() => assert.fail("answered"), (e) => e);
      assert.ok(refused instanceof GenqueueError, String(refused));
      assert.equal(refused.status, 401);
      assert.equal(refused.title, "Unauthorized");
    }
  }
});

test("a task waiting in line is cancelled and refunded; a second cancel is a 409", { skip: SKIP }, async () => {
  await crowd(CROWD.slice(0, 30));
  const carol = clientOf("carol");
  const task = await carol.submit("photography", { person: PHOTO }, "cancel me");
  assert.ok(task.submitted.position >= 10, JSON.stringify(task.submitted));
  const cancelled = await task.cancel();
  assert.deepEqual(cancelled, { task_id: task.id, status: "cancelled", refunded: 1 });
  const me = await carol.me();
  assert.deepEqual([me.charged, me.refunded, me.balance], [1, 1, me.granted]);
  const views = [];
  for await (const view of task.watch()) views.push(view.status);
  assert.deepEqual(views, ["cancelled"]);
  const again = await task.cancel().then(() => assert.fail("cancelled twice"), (e) => e);
  assert.ok(again instanceof GenqueueError && again.status === 409, String(again));
  const missing = await carol.task("0".repeat(32)).status().then(() => assert.fail("found"), (e) => e);
  assert.equal(missing.status, 404);
});
