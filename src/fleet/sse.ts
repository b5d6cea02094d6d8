/**
 * A parser of `text/event-stream` (the WHATWG server-sent events format) as
 * the fleet stream uses it: fed text chunks as they arrive (split anywhere,
 * even inside a line or between CR and LF), it hands back each complete event
 * (`event:` name, `data:` lines joined by "\n", `id:`). Comments (`:`) and
 * unknown fields are ignored. Bounded: a line or an event longer than
 * `maxEventChars` throws (a peer that never ends a line must not grow memory).
 */

export interface SseEvent {
  /** `message` when the event names none. */
  event: string;
  data: string;
  id: string | undefined;
}

export class SseParser {
  /**
   * The unfinished line, in the pieces it came in (no line break in any):
   * joined only when a line break arrives, so a line sent a byte at a time
   * costs linear time, not quadratic.
   */
  private pending: string[] = [];
  private pendingChars = 0;
  private event = "";
  private data: string[] = [];
  private dataChars = 0;
  private id: string | undefined;
  /** The previous chunk ended in CR: a LF starting the next one belongs to it. */
  private skipLf = false;

  constructor(private readonly maxEventChars = 1 << 20) {}

  /** Feeds a chunk of text; returns the events it completed, in order. */
  feed(chunk: string): SseEvent[] {
    const out: SseEvent[] = [];
    let text = chunk;
    if (this.skipLf && text.startsWith("\n")) text = text.slice(1);
    this.skipLf = false;
    if (!text.includes("\r") && !text.includes("\n")) {
      // still the same line
      this.pending.push(text);
      this.pendingChars += text.length;
      if (this.pendingChars > this.maxEventChars)
        throw new Error(`event stream: a line longer than ${this.maxEventChars} characters`);
      return out;
    }
    const buffer = this.pending.join("") + text;
    this.pending = [];
    this.pendingChars = 0;
    let start = 0;
    // the next CR and LF at or after `start` (-1: none left), each searched again only once passed:
    // a chunk of many lines is read in linear time
    let cr = -2;
    let lf = -2;
    for (;;) {
      if (cr !== -1 && cr < start) cr = buffer.indexOf("\r", start);
      if (lf !== -1 && lf < start) lf = buffer.indexOf("\n", start);
      let end: number;
      let next: number;
      if (cr === -1 && lf === -1) break;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr + 1 === buffer.length) {
          // CR at the end of the chunk: the line ends here; a LF may follow in the next chunk
          next = cr + 1;
          this.skipLf = true;
        } else next = buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      this.line(buffer.slice(start, end), out);
      start = next;
    }
    const rest = buffer.slice(start);
    if (rest.length > this.maxEventChars)
      throw new Error(`event stream: a line longer than ${this.maxEventChars} characters`);
    if (rest !== "") {
      this.pending.push(rest);
      this.pendingChars = rest.length;
    }
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === "") {
      // dispatch
      if (this.data.length > 0) {
        out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      this.dataChars = 0;
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") {
      this.dataChars += value.length + 1;
      if (this.dataChars > this.maxEventChars)
        throw new Error(`event stream: an event longer than ${this.maxEventChars} characters`);
      this.data.push(value);
    } else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}
