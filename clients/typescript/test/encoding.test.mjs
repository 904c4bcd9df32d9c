// How input images become what the API takes, without a server.
import assert from "node:assert/strict";
import { test } from "node:test";

import { base64Of, encodeImage } from "../dist/genqueue-client.js";

test("images are sent as base64 from bytes and Blobs, as they are from strings and URLs", async () => {
  const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) % 256); // more than one chunk of the encoder
  const expected = Buffer.from(bytes).toString("base64");
  assert.equal(base64Of(bytes), expected);
  assert.equal(await encodeImage(bytes), expected);
  assert.equal(await encodeImage(bytes.buffer), expected);
  assert.equal(await encodeImage(new Blob([bytes])), expected);
  assert.equal(await encodeImage(new DataView(bytes.buffer, 1, 3)), Buffer.from(bytes.subarray(1, 4)).toString("base64"));
  assert.equal(await encodeImage("data:image/png;base64,AAAA"), "data:image/png;base64,AAAA");
  assert.deepEqual(await encodeImage({ url: "https://example.org/a.png" }), { url: "https://example.org/a.png" });
  await assert.rejects(encodeImage(42), TypeError);
});
