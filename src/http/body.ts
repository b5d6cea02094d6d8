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
 * Walks a parsed value and refuses nesting deeper than `maxDepth` and
 * prototype-polluting keys. Stops at the first problem, so a hostile body
 * costs at most `maxDepth` frames.
 */
export function checkShape(value: unknown, maxDepth: number): void {
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
    for (const key of Object.keys(v)) {
      if (!isWellFormed(key)) throw lonelySurrogate(path);
      if (FORBIDDEN_KEYS.has(key)) {
        throw toolgateError("forbidden_key", `the key "${key}" is not allowed (at ${path || "/"})`);
      }
      walk((v as Record<string, unknown>)[key], depth + 1, `${path}/${key}`);
    }
  };
  walk(value, 1, "");
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
  const text = buf.toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw toolgateError("malformed_json", `the body is not valid JSON: ${(e as Error).message}`);
  }
  checkShape(value, limits.maxDepth);
  return { value, text };
}
