import type { IncomingMessage } from "node:http";
import { toolgateError } from "../errors";

export interface BodyLimits {
  bodyBytes: number;
  maxDepth: number;
}

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** True for application/json (any charset parameter) and application/<x>+json. */
export function isJsonContentType(ct: string | undefined): boolean {
  if (ct === undefined) return false;
  const mime = (ct.split(";")[0] ?? "").trim().toLowerCase();
  return mime === "application/json" || /^application\/[a-z0-9.+-]+\+json$/.test(mime);
}

/** Reads the whole body up to `limit` bytes; refuses a larger one early. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume(); // drain and discard; the response closes the connection
    return Promise.reject(
      toolgateError("body_too_large", `request body is ${declared} bytes; the limit is ${limit}`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
      if (err) {
        req.resume();
        reject(err);
      } else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > limit)
        finish(toolgateError("body_too_large", `request body exceeds the limit of ${limit} bytes`));
      else chunks.push(c);
    };
    const onEnd = (): void => finish();
    const onError = (e: Error): void => finish(e);
    const onAborted = (): void => finish(new Error("request aborted"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
}

/**
 * Walks a parsed value and refuses nesting deeper than `maxDepth`,
 * prototype-polluting keys and lone surrogates. Stops at the first problem,
 * so a hostile body costs at most `maxDepth` frames.
 *
 * Given the JSON `text` the value was parsed from, it also refuses duplicate
 * keys (I-JSON, RFC 7493 §2.3): JSON.parse keeps the last of two equal keys
 * silently, so `{"amount":9000,"amount":20}` would be read as 20 here and
 * possibly as 9000 by the next reader. The walk counts the keys of the parsed
 * objects; {@link countKeys} counts the keys written in the text. Without a
 * duplicate, each written object is one parsed object and the counts agree; a
 * duplicate drops a key (and the keys inside the value it replaced), so they
 * differ. Only then is the text scanned again, to name the key.
 * (scripts/bench/body.mjs measures the cost: a few percent of parse and walk
 * when no string holds a colon, a fifth to a third when the exact count runs.)
 */
export function checkShape(value: unknown, maxDepth: number, text?: string): void {
  let parsedKeys = 0;
  const walk = (v: unknown, depth: number, path: string): void => {
    if (typeof v === "string") {
      if (!isWellFormed(v)) throw lonelySurrogate(path);
      return;
    }
    if (v === null || typeof v !== "object") return;
    if (depth > maxDepth) {
      throw toolgateError(
        "nesting_too_deep",
        `the body nests deeper than ${maxDepth} levels (at ${path || "/"})`,
      );
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) walk(v[i], depth + 1, `${path}/${i}`);
      return;
    }
    const keys = Object.keys(v);
    parsedKeys += keys.length;
    for (const key of keys) {
      if (!isWellFormed(key)) throw lonelySurrogate(path);
      if (FORBIDDEN_KEYS.has(key)) {
        throw toolgateError("forbidden_key", `the key "${key}" is not allowed (at ${path || "/"})`);
      }
      walk((v as Record<string, unknown>)[key], depth + 1, `${path}/${key}`);
    }
  };
  walk(value, 1, "");
  // colons ≥ written keys ≥ parsed keys: all colons being keys (no colon in a
  // string, the common case) settles it with the cheapest count there is
  if (text !== undefined && countColons(text) !== parsedKeys && countKeys(text) !== parsedKeys) {
    const dup = findDuplicateKey(text);
    throw toolgateError(
      "duplicate_key",
      dup === undefined
        ? "the body has an object with the same key twice"
        : `duplicate key ${JSON.stringify(clip(dup.key, MAX_SHOWN))} at ${dup.path}`,
    );
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

/** Index of the `"` that closes the string whose opening `"` is at `open`. */
function stringEnd(text: string, open: number): number {
  let end = text.indexOf('"', open + 1);
  for (;;) {
    if (end === -1) return text.length; // unterminated: not valid JSON
    // the quote is escaped when an odd number of backslashes precede it
    let k = end - 1;
    while (text.charCodeAt(k) === BACKSLASH) k--;
    if ((end - 1 - k) % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
}

/** How many colons the text has, in strings or not. */
function countColons(text: string): number {
  let n = 0;
  for (let i = text.indexOf(":"); i !== -1; i = text.indexOf(":", i + 1)) n++;
  return n;
}

/**
 * How many keys a valid JSON text writes, counting every occurrence (also the
 * ones JSON.parse drops): outside strings, a colon only ever follows a key.
 * One pass over the structure; each string is skipped with indexOf, never
 * decoded, so long string values cost little.
 */
export function countKeys(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) i = stringEnd(text, i);
    else if (c === COLON) n++;
  }
  return n;
}

interface Frame {
  parent: Frame | undefined;
  /** The member name or array index this container is at in its parent. */
  segment: string;
  /** Keys seen so far (objects only). */
  keys: Set<string> | undefined;
  /** Objects: the next string is a key. Arrays: the index of the current item. */
  expectKey: boolean;
  index: number;
  /** The last key read (objects). */
  key: string;
}

/**
 * The first key that repeats in an object of a valid JSON text, after
 * decoding (so `"a"` and `"\u0061"` are one key), and the path of that
 * object. Iterative (an explicit stack), so arbitrarily deep text is fine.
 * Only called once {@link countKeys} found a difference: this is the slow,
 * exact scan that names the key.
 */
export function findDuplicateKey(text: string): { key: string; path: string } | undefined {
  let top: Frame | undefined;
  const open = (isObject: boolean): void => {
    const segment = top === undefined ? "" : top.keys !== undefined ? top.key : String(top.index);
    top = {
      parent: top,
      segment,
      keys: isObject ? new Set() : undefined,
      expectKey: isObject,
      index: 0,
      key: "",
    };
  };
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(text, i);
      if (top?.keys !== undefined && top.expectKey) {
        const raw = text.slice(i, end + 1);
        const key = raw.includes("\\") ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.keys.has(key)) return { key, path: pathOf(top) };
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) open(true);
    else if (c === 0x5b /* [ */) open(false);
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) top = top?.parent;
    else if (c === 0x2c /* , */ && top !== undefined) {
      if (top.keys !== undefined) top.expectKey = true;
      else top.index++;
    }
  }
  return undefined;
}

const MAX_SHOWN = 200;
const MAX_SEGMENT = 64;

/** Shortens what a message echoes from the body (a key may be a megabyte). */
function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

/**
 * The path of a frame ("/a/0/b"; "/" for the top level) for a message: each
 * segment at most MAX_SEGMENT characters, the innermost MAX_SHOWN or so kept.
 */
function pathOf(frame: Frame): string {
  const segments: string[] = [];
  let length = 0;
  for (let f: Frame | undefined = frame; f?.parent !== undefined; f = f.parent) {
    if (length > MAX_SHOWN) {
      segments.push("…");
      break;
    }
    const seg = clip(f.segment, MAX_SEGMENT);
    segments.push(seg);
    length += seg.length + 1;
  }
  return segments.length === 0 ? "/" : `/${segments.reverse().join("/")}`;
}

const isWellFormed = (s: string): boolean =>
  (s as unknown as { isWellFormed(): boolean }).isWellFormed();

function lonelySurrogate(path: string) {
  return toolgateError(
    "invalid_request",
    `a string contains a lone UTF-16 surrogate, which is not Unicode (I-JSON, RFC 7493) (at ${path || "/"})`,
  );
}

export interface ParsedBody {
  value: unknown;
  text: string;
}

/** JSON syntax, then depth, forbidden keys, lone surrogates and duplicate keys. */
export function parseJsonText(text: string, maxDepth: number): ParsedBody {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw toolgateError("malformed_json", `the body is not valid JSON: ${(e as Error).message}`, {
      cause: e,
    });
  }
  checkShape(value, maxDepth, text);
  return { value, text };
}

/** True when a request announces a body (a non-zero Content-Length, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const len = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (len !== undefined && len !== "0");
}

/** Content type, size, JSON syntax, depth and key checks, in that order. */
export async function readJson(req: IncomingMessage, limits: BodyLimits): Promise<ParsedBody> {
  if (!isJsonContentType(req.headers["content-type"])) {
    req.resume();
    throw toolgateError(
      "unsupported_content_type",
      `Content-Type must be application/json, got ${JSON.stringify(req.headers["content-type"] ?? null)}`,
    );
  }
  const buf = await readBody(req, limits.bodyBytes);
  return parseJsonText(buf.toString("utf8"), limits.maxDepth);
}
