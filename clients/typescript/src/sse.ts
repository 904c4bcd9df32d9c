/**
 * Server-Sent Events read from a `fetch` body, parsed as the HTML standard's "event stream
 * interpretation" says (https://html.spec.whatwg.org/multipage/server-sent-events.html):
 * lines end in CRLF, LF or CR, a line starting with a colon is a comment, `data` lines are
 * joined with line feeds, an event is dispatched at an empty line (one with no data is not),
 * and an event cut off by the end of the stream is dropped.
 */

/** One dispatched event. */
export interface ServerEvent {
  /** The `event` field, or "message" when there was none. */
  type: string;
  data: string;
  /** The stream's last event id when the event was dispatched (what a reconnect sends). */
  lastEventId: string;
}

/**
 * The parser of one connection's bytes. `lastEventId` is the id a reconnect sends as
 * `Last-Event-ID`: only a dispatched event sets it, so an event cut off after its `id` line
 * is asked for again. `retry` is the reconnection time the server last asked for (ms).
 */
export class EventStreamParser {
  lastEventId: string;
  retry: number | undefined = undefined;
  private readonly decoder = new TextDecoder("utf-8");
  private line = "";
  private afterCR = false;
  private idBuffer: string;
  private eventType = "";
  private data = "";
  private hasData = false;

  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId;
  }

  /** The events completed by this chunk of the body (the decoder drops a leading BOM). */
  feed(chunk: Uint8Array): ServerEvent[] {
    return this.push(this.decoder.decode(chunk, { stream: true }));
  }

  /** The events completed by this text. */
  push(text: string): ServerEvent[] {
    const events: ServerEvent[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 10 && this.afterCR && i === start) {
        // The LF of a CRLF split between chunks: its line already ended at the CR.
        this.afterCR = false;
        start = i + 1;
        continue;
      }
      this.line += text.slice(start, i);
      const event = this.takeLine(this.line);
      if (event !== undefined) events.push(event);
      this.line = "";
      this.afterCR = false;
      if (c === 13) {
        if (i + 1 === text.length) this.afterCR = true; // its LF may open the next chunk
        else if (text.charCodeAt(i + 1) === 10) i++; // CRLF within the chunk
      }
      start = i + 1;
    }
    if (start < text.length) {
      this.line += text.slice(start);
      this.afterCR = false;
    }
    return events;
  }

  private takeLine(line: string): ServerEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) this.idBuffer = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default: // unknown fields are ignored
    }
    return undefined;
  }

  private dispatch(): ServerEvent | undefined {
    this.lastEventId = this.idBuffer;
    const type = this.eventType || "message";
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    const had = this.hasData;
    this.eventType = "";
    this.data = "";
    this.hasData = false;
    return had ? { type, data, lastEventId: this.lastEventId } : undefined;
  }
}

/**
 * The events of a response body as they arrive, `onChunk` called at each chunk; stops reading
 * (and releases the body) when left.
 */
export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  parser: EventStreamParser,
  onChunk?: () => void,
): AsyncGenerator<ServerEvent, void, undefined> {
  const reader = body.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        return;
      }
      onChunk?.();
      yield* parser.feed(value);
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
