import { createHash, type Hash } from "node:crypto";
import { parseYaml } from "../shared/yaml";
import { toolgateError, rethrowAs } from "../errors";

/**
 * OPA's bundle file digests (bundle/hash.go), reproduced exactly: files whose
 * base name is data.json, data.yaml, data.yml, .manifest or .signatures.json
 * are parsed and hashed in a canonical form (object keys sorted by their UTF-8
 * bytes, no whitespace, numbers as written in the JSON text, strings encoded as
 * Go's encoding/json does without HTML escaping); every other file is hashed
 * on its raw bytes.
 */

/** OPA's hashing algorithm names → node's. */
export const HASH_ALGORITHMS: Record<string, string> = {
  MD5: "md5",
  "SHA-1": "sha1",
  "SHA-224": "sha224",
  "SHA-256": "sha256",
  "SHA-384": "sha384",
  "SHA-512": "sha512",
  "SHA-512-224": "sha512-224",
  "SHA-512-256": "sha512-256",
};

const STRUCTURED = new Set(["data.json", "data.yaml", "data.yml", ".manifest", ".signatures.json"]);

/** Whether OPA hashes this bundle path on its parsed form. */
export function isStructuredDoc(path: string): boolean {
  return STRUCTURED.has(path.slice(path.lastIndexOf("/") + 1));
}

/** A JSON number kept as written (Go's json.Number). */
class Num {
  constructor(readonly text: string) {}
}
type Canon = null | boolean | string | Num | Canon[] | Map<string, Canon>;

const MAX_DEPTH = 10_000;

// eslint-disable-next-line no-control-regex -- JSON strings exclude raw control characters
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/** A strict JSON parser that keeps number literals (OPA decodes with UseNumber). */
function parseJsonKeepingNumbers(text: string): Canon {
  let i = 0;
  const ws = (): void => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const fail = (): never => {
    throw new SyntaxError(`invalid JSON at offset ${i}`);
  };
  const str = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (m === null) return fail();
    i += m[0].length;
    return JSON.parse(m[0]) as string;
  };
  const value = (depth: number): Canon => {
    if (depth > MAX_DEPTH) fail();
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj = new Map<string, Canon>();
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        const k = str();
        ws();
        if (text[i++] !== ":") fail();
        obj.set(k, value(depth + 1));
        ws();
        const d = text[i++];
        if (d === "}") return obj;
        if (d !== ",") fail();
      }
    }
    if (c === "[") {
      i++;
      const arr: Canon[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        const d = text[i++];
        if (d === "]") return arr;
        if (d !== ",") fail();
      }
    }
    if (c === '"') return str();
    for (const [lit, v] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return v;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) return fail();
    i += m[0].length;
    return new Num(m[0]);
  };
  const v = value(0);
  ws();
  if (i !== text.length) fail();
  return v;
}

/** A value from the YAML parser, as Go's YAMLToJSON + UseNumber would see it. */
function fromPlain(v: unknown): Canon {
  if (v === null || v === undefined) return null;
  if (typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") return new Num(String(v));
  if (typeof v === "bigint") return new Num(v.toString());
  if (Array.isArray(v)) return v.map(fromPlain);
  if (v instanceof Date) return v.toISOString();
  if (typeof v === "object") {
    const m = new Map<string, Canon>();
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) m.set(k, fromPlain(x));
    return m;
  }
  return JSON.stringify(v) ?? "";
}

/** Parses a structured bundle file as OPA's util.Unmarshal does: JSON if valid, else YAML. */
function parseStructured(raw: Buffer, path: string): Canon {
  let text = raw.toString("utf8");
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return parseJsonKeepingNumbers(text);
  } catch {
    return rethrowAs("bundle_digest_mismatch", `${path}: cannot be parsed to compute its digest`, () =>
      fromPlain(parseYaml(text)),
    );
  }
}

/** Lone surrogates become U+FFFD, as Go's decoder makes them. */
function wellFormed(s: string): string {
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

/** A string as Go's encoding/json writes it with SetEscapeHTML(false). */
function goString(s: string): string {
  return JSON.stringify(wellFormed(s)).replace(/[\u2028\u2029]/g, (c) =>
    c === "\u2028" ? "\\u2028" : "\\u2029",
  );
}

function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(wellFormed(a)), Buffer.from(wellFormed(b)));
}

function walk(v: Canon, h: Hash): void {
  if (v instanceof Map) {
    h.update("{");
    [...v.keys()].sort(byUtf8).forEach((k, i) => {
      if (i > 0) h.update(",");
      h.update(goString(k));
      h.update(":");
      walk(v.get(k) as Canon, h);
    });
    h.update("}");
  } else if (Array.isArray(v)) {
    h.update("[");
    v.forEach((e, i) => {
      if (i > 0) h.update(",");
      walk(e, h);
    });
    h.update("]");
  } else if (v instanceof Num) h.update(v.text);
  else if (typeof v === "string") h.update(goString(v));
  else h.update(String(v));
}

/** The hex digest OPA records for the file at bundle path `path`. */
export function bundleFileDigest(path: string, raw: Buffer, algorithm: string): string {
  const nodeAlg = HASH_ALGORITHMS[algorithm];
  if (nodeAlg === undefined) {
    throw toolgateError(
      "bundle_signature_invalid",
      `unsupported hashing algorithm "${algorithm}" for ${path}`,
    );
  }
  const h = createHash(nodeAlg);
  if (isStructuredDoc(path)) walk(parseStructured(raw, path), h);
  else h.update(raw);
  return h.digest("hex");
}
