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
export declare class EventStreamParser {
    lastEventId: string;
    retry: number | undefined;
    private readonly decoder;
    private line;
    private afterCR;
    private idBuffer;
    private eventType;
    private data;
    private hasData;
    constructor(lastEventId?: string);
    /** The events completed by this chunk of the body (the decoder drops a leading BOM). */
    feed(chunk: Uint8Array): ServerEvent[];
    /** The events completed by this text. */
    push(text: string): ServerEvent[];
    private takeLine;
    private dispatch;
}
/**
 * The events of a response body as they arrive, `onChunk` called at each chunk; stops reading
 * (and releases the body) when left.
 */
export declare function readEvents(body: ReadableStream<Uint8Array>, parser: EventStreamParser, onChunk?: () => void): AsyncGenerator<ServerEvent, void, undefined>;
