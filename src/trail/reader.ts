/**
 * The one reader of a trail: the lines of its files in order, each with what
 * it holds (`json`, `entry`) and its chain facts (`check`: seq, prev and hash
 * checked against the line's own bytes), for the verifier (`verifyTrail`),
 * `toolgate replay` and the rollout report; and the last good record of a
 * file, for the writer resuming a chain.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { toolgateError } from "../errors";
import { isObject } from "../shared/guards";
import { HASH_SUFFIX_LENGTH, lineBody, sha256Hex } from "./format";

/** A record's place in the chain, as its line states it (and its hash proves). */
export interface ChainFacts {
  seq: number;
  prev: string;
  hash: string;
}

/** A line's chain facts, or why the line is bad. */
export type LineCheck =
  | { ok: true; rec: ChainFacts }
  | { ok: false; reason: "malformed" | "hash_mismatch"; message: string; seq?: number };

export type ParsedJson = { ok: true; value: unknown } | { ok: false; error: string };

/** What a readable line holds: a JSON object with a string kind and an object record. */
export interface TrailEntry {
  /** As the line states them: checked only by `TrailLine.check`. */
  seq: unknown;
  time: unknown;
  kind: string;
  record: Record<string, unknown>;
}

const HEX64 = /^[0-9a-f]{64}$/;
const MEMBERS = new Set(["seq", "time", "kind", "prev", "record", "hash"]);

function parseJson(text: string): ParsedJson {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Checks one line (parsed as `parsed`) against the layout and its own hash. */
function checkParsed(text: string, parsed: ParsedJson): LineCheck {
  if (!parsed.ok) return { ok: false, reason: "malformed", message: `not JSON: ${parsed.error}` };
  const value = parsed.value;
  if (!isObject(value)) return { ok: false, reason: "malformed", message: "not a JSON object" };
  const extra = Object.keys(value).find((k) => !MEMBERS.has(k));
  if (extra !== undefined)
    return { ok: false, reason: "malformed", message: `unexpected member "${extra}"` };
  const { seq, time, kind, prev, record, hash } = value;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1)
    return { ok: false, reason: "malformed", message: "seq is not a positive integer" };
  const bad = (message: string) => ({
    ok: false as const,
    reason: "malformed" as const,
    message,
    seq,
  });
  if (typeof time !== "string") return bad("time is not a string");
  if (typeof kind !== "string" || kind === "") return bad("kind is not a non-empty string");
  if (typeof prev !== "string" || !HEX64.test(prev)) return bad("prev is not 64 hex digits");
  if (typeof hash !== "string" || !HEX64.test(hash)) return bad("hash is not 64 hex digits");
  if (!isObject(record)) return bad("record is not a JSON object");
  // The line must be exactly the body as written plus the hash suffix.
  const bodyText = text.slice(0, text.length - HASH_SUFFIX_LENGTH);
  const prefix = lineBody(seq, time, JSON.stringify(kind), prev, "");
  if (!bodyText.startsWith(prefix) || text.slice(bodyText.length) !== `,"hash":"${hash}"}`) {
    return bad("the line is not in toolgate's trail layout");
  }
  const computed = sha256Hex(bodyText);
  if (computed !== hash)
    return {
      ok: false,
      reason: "hash_mismatch",
      message: `record content does not match its hash (stored ${hash.slice(0, 12)}…, computed ${computed.slice(0, 12)}…)`,
      seq,
    };
  return { ok: true, rec: { seq, prev, hash } };
}

/** Parses and checks one line of text (without its newline). */
export function checkLine(text: string): LineCheck {
  return checkParsed(text, parseJson(text));
}

/** One line of a trail file. Parsing and checking happen on demand, once each. */
export class TrailLine {
  private parsed: ParsedJson | undefined;
  private checked: LineCheck | undefined;

  constructor(
    /** The file, as expanded from the paths given. */
    readonly file: string,
    /** 1-based line number within the file. */
    readonly line: number,
    /** The line's text (UTF-8), without its newline. */
    readonly text: string,
    /** False for a file's last line when it has no terminating newline: a torn write. */
    readonly complete: boolean,
  ) {}

  /** `JSON.parse` of the text. */
  json(): ParsedJson {
    return (this.parsed ??= parseJson(this.text));
  }

  /** The line checked against the trail layout and its own hash: its chain facts, or why it is bad. */
  check(): LineCheck {
    return (this.checked ??= checkParsed(this.text, this.json()));
  }

  /**
   * What the line holds when it is a JSON object with a string kind and an
   * object record, whether or not its layout and hash check out (readers
   * that go on past a break read what is readable; `check` says what is
   * intact); undefined otherwise.
   */
  entry(): TrailEntry | undefined {
    const j = this.json();
    if (!j.ok || !isObject(j.value)) return undefined;
    const { seq, time, kind, record } = j.value;
    if (typeof kind !== "string" || !isObject(record)) return undefined;
    return { seq, time, kind, record };
  }
}

/**
 * The lines of `files` (trail files, see `expandTrailPaths`) in order, each
 * file read when the iteration reaches it. A file's last line without a
 * newline comes with `complete: false`. Throws `audit_trail_unreadable` for a
 * file that cannot be read.
 */
export function* readTrail(files: readonly string[]): Generator<TrailLine, void, undefined> {
  for (const file of files) {
    let buf: Buffer;
    try {
      buf = readFileSync(file);
    } catch (e) {
      throw toolgateError("audit_trail_unreadable", `${file}: ${(e as Error).message}`);
    }
    let start = 0;
    let line = 0;
    while (start < buf.length) {
      line++;
      const nl = buf.indexOf(0x0a, start);
      const end = nl < 0 ? buf.length : nl;
      yield new TrailLine(file, line, buf.toString("utf8", start, end), nl >= 0);
      if (nl < 0) break;
      start = nl + 1;
    }
  }
}

export interface TailScan {
  /** The last complete line that checks out, if any. */
  last?: ChainFacts;
  /** Bytes after that line (a torn or corrupt tail); 0 when the file ends cleanly. */
  discardedBytes: number;
  size: number;
}

/** Finds the last good record of a file, reading backwards from the end. */
export function scanTail(path: string): TailScan {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return { discardedBytes: 0, size };
    for (let window = 64 * 1024; ; window *= 4) {
      const start = Math.max(0, size - window);
      const buf = Buffer.alloc(size - start);
      let got = 0;
      while (got < buf.length) {
        const n = readSync(fd, buf, got, buf.length - got, start + got);
        if (n === 0) break;
        got += n;
      }
      // complete lines end with \n; walk them from the last one backwards
      let end = buf.lastIndexOf(0x0a);
      while (end >= 0) {
        const prevNl = end === 0 ? -1 : buf.lastIndexOf(0x0a, end - 1);
        if (prevNl < 0 && start > 0) break; // this line may begin before the window
        const checked = checkLine(buf.toString("utf8", prevNl + 1, end));
        if (checked.ok)
          return { last: checked.rec, discardedBytes: size - (start + end + 1), size };
        end = prevNl;
      }
      if (start === 0) return { discardedBytes: size, size };
    }
  } finally {
    closeSync(fd);
  }
}
