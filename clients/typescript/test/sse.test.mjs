// The event stream parser against the HTML standard's rules, fed whole and byte by byte; and the
// watch's reconnection on a server of the test's own that drops the stream.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { EventStreamParser, GenqueueClient, GenqueueError, retryAfterSeconds } from "../dist/genqueue-client.js";

const encoder = new TextEncoder();

function parse(text, { split = false } = {}) {
  const parser = new EventStreamParser();
  const bytes = encoder.encode(text);
  const events = [];
  if (split) for (const b of bytes) events.push(...parser.feed(Uint8Array.of(b)));
  else events.push(...parser.feed(bytes));
  return { events, parser };
}

test("the parser follows the standard's line, field and dispatch rules", () => {
  const stream =
    "\uFEFF: a comment\r\n" +
    "event: task\r\ndata: one\r\ndata:two\r\nid: 1\r\n\r\n" + // CRLF, a field without its space
    "data: x\rid: 2\r\r" + // CR alone
    "data\n\n" + // a field with no colon: empty data
    "id: 3\n\n" + // no data: not dispatched, but the id is kept
    "data:  two spaces\nretry: 2500\nunknown: field\n\n" +
    "retry: soon\nid: bad\u0000id\ndata: last\n\n" +
    "data: cut off\nid: 9"; // the stream ends mid-event: dropped
  for (const split of [false, true]) {
    const { events, parser } = parse(stream, { split });
    assert.deepEqual(events, [
      { type: "task", data: "one\ntwo", lastEventId: "1" },
      { type: "message", data: "x", lastEventId: "2" },
      { type: "message", data: "", lastEventId: "2" },
      { type: "message", data: " two spaces", lastEventId: "3" },
      { type: "message", data: "last", lastEventId: "3" },
    ]);
    assert.equal(parser.lastEventId, "3", "an id of an event cut off is not the last event id");
    assert.equal(parser.retry, 2500);
  }
});

test("a CRLF split between chunks ends one line, and multi-byte text split anywhere decodes", () => {
  const parser = new EventStreamParser();
  const events = [
    ...parser.feed(encoder.encode("data: caf\u00e9 \u{1F600}\r")),
    ...parser.feed(encoder.encode("\n\r")),
    ...parser.feed(encoder.encode("\n")),
  ];
  assert.deepEqual(events, [{ type: "message", data: "caf\u00e9 \u{1F600}", lastEventId: "" }]);
  const bytes = encoder.encode("data: \u00e9\u{1F600}\n\n");
  const one = new EventStreamParser();
  const split = [...one.feed(bytes.subarray(0, 7)), ...one.feed(bytes.subarray(7, 9)), ...one.feed(bytes.subarray(9))];
  assert.deepEqual(split.map((e) => e.data), ["\u00e9\u{1F600}"]);
});

test("Retry-After is read as seconds or as an HTTP date", () => {
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(retryAfterSeconds("7", now), 7);
  assert.equal(retryAfterSeconds("Wed, 01 Jan 2025 00:00:30 GMT", now), 30);
  assert.equal(retryAfterSeconds(null, now), undefined);
  assert.equal(retryAfterSeconds("soon", now), undefined);
});

test("a watch stream closed by the server before the end is opened again with Last-Event-ID", async () => {
  // A server that sends one update and closes, then (asked with Last-Event-ID) the next and the end.
  const seen = [];
  const server = createServer((req, res) => {
    seen.push(req.headers["last-event-id"] ?? null);
    if (req.headers.authorization !== "Bearer t") {
      res.writeHead(401, { "Content-Type": "application/problem+json" });
      res.end(JSON.stringify({ type: "/problems/unauthorized", title: "Unauthorized", status: 401, detail: "no" }));
      return;
    }
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    const view = (status, position) => JSON.stringify({ task_id: "t1", status, position });
    if (!req.headers["last-event-id"]) {
      res.end(`retry: 10\n: ping\n\nevent: task\ndata: ${view("queued", 1)}\nid: 1-1-waiting\n\n`);
    } else {
      res.write(`event: task\ndata: ${view("running", null)}\nid: 2\n\n`);
      res.end(`event: task\ndata: ${view("succeeded", null)}\nid: 3\n\n`);
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    const task = new GenqueueClient({ baseUrl: base, token: "t" }).task("t1");
    const statuses = [];
    for await (const view of task.watch()) statuses.push(view.status);
    assert.deepEqual(statuses, ["queued", "running", "succeeded"]);
    assert.deepEqual(seen, [null, "1-1-waiting"]);
    assert.equal(task.lastEventId, "3");
    const stranger = new GenqueueClient({ baseUrl: base, token: "x" }).task("t1");
    const refused = await stranger.watch().next().then(() => assert.fail("watched"), (e) => e);
    assert.ok(refused instanceof GenqueueError && refused.status === 401 && refused.type === "/problems/unauthorized");
  } finally {
    server.close();
  }
});
