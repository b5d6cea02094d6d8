/**
 * One redaction step shared by spans, log lines and the local audit trail.
 *
 * `Redactor.redact(value, mask)` returns a new copy of `value` in which
 *  1. the policy's mask ops (remove / hash / replace) are applied,
 *  2. the defaults redact everything that looks secret — by key name or by value shape —
 *     except under paths the mask explicitly `reveal`s,
 *  3. long strings are cut and deep structures are cut off.
 *
 * Free text that may quote caller values (policy reason messages, refusal
 * messages, tool names) goes through the same defaults. Passing one
 * `SecretsSeen` to several calls makes a later call replace, wherever a text
 * quotes it, every value an earlier call replaced (a value under a secret key,
 * or one the policy's mask hashed or removed) by that same replacement.
 *
 * See docs/redaction.md for what the defaults catch and what they miss.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { isObject } from "../shared/guards";
import { canonicalizeAny, CIRCULAR } from "../shared/jcs";

export type MaskOp =
  | { op: "remove"; path: string }
  | { op: "hash"; path: string }
  | { op: "replace"; path: string; value: unknown }
  | { op: "reveal"; path: string };

export interface RedactorOptions {
  /** Key for HMAC-SHA256, at least 16 bytes. Generate a random per-process key if none is configured. */
  hmacKey: Buffer;
  /** Short id of the key ([A-Za-z0-9._-]{1,32}); default: first 8 hex chars of a SHA-256 fingerprint of the key. */
  keyId?: string;
  /** More key-name patterns whose values are secret (tested against the raw key name). */
  extraSecretKeys?: RegExp[];
  /** What the defaults do to secrets: "hash" (default) or "erase" ("[REDACTED]"). */
  mode?: "hash" | "erase";
  /** Longer strings are cut with a "…[+N chars]" suffix (default 1024). */
  maxStringLength?: number;
  /** Objects/arrays nested deeper than this are replaced by "[TOO DEEP]" (default 16). */
  maxDepth?: number;
}

export const REDACTED = "[REDACTED]";
export const TOO_DEEP = "[TOO DEEP]";
export { CIRCULAR };

/** A fresh random key for `RedactorOptions.hmacKey` (32 bytes). */
export function generateHmacKey(): Buffer {
  return randomBytes(32);
}

const MAX_MASK_OPS = 1000;
const MAX_PATH_SEGMENTS = 64;
/**
 * Strings shorter than this are not scanned for secret shapes (no detected kind is shorter),
 * except for `key=value` / `key: value` forms, which can be as short as `pw=x`.
 */
const MIN_SCAN_LENGTH = 12;

/** Worth scanning: long enough for any kind, or a possible `pw=x` / `pin: 1` (≥ 4 chars). */
function worthScanning(s: string): boolean {
  return s.length >= MIN_SCAN_LENGTH || (s.length >= 4 && (s.includes("=") || s.includes(":")));
}
const KEY_ID_RE = /^[A-Za-z0-9._-]{1,32}$/;
const HASH_OUTPUT_RE = /^hmac-sha256:[A-Za-z0-9._-]{1,32}:[A-Za-z0-9_-]{22}$/;
/** A replacement at the start of a text, followed by punctuation only (`hmac…:…}`). */
const REPLACED_VALUE_RE =
  /^(?:(?:Bearer|Basic|Token|Digest|Bot)[ \t]+)?(?:hmac-sha256:[A-Za-z0-9._-]{1,32}:[A-Za-z0-9_-]{22}|\[REDACTED\])[^A-Za-z0-9]*$/;

// ---------------------------------------------------------------------------
// Secret key names
// ---------------------------------------------------------------------------

/** Words that make a key secret wherever they occur as a word of the key name. */
const SECRET_WORDS: ReadonlySet<string> = new Set([
  "password",
  "passwords",
  "passwd",
  "pwd",
  "pw",
  "pass",
  "passkey",
  "passphrase",
  "passcode",
  "secret",
  "secrets",
  "token",
  "apikey",
  "apikeys",
  "xapikey",
  "authorization",
  "auth",
  "cookie",
  "cookies",
  "setcookie",
  "session",
  "sessionid",
  "credential",
  "credentials",
  "creds",
  "privatekey",
  "clientsecret",
  "signature",
  "otp",
  "totp",
  "pin",
  "pincode",
  "cvv",
  "cvv2",
  "cvc",
  "cvc2",
  "cvn",
  "csc",
  "securitycode",
  "ssn",
  "cardnumber",
  "pan",
  "iban",
  "accountnumber",
  "routingnumber",
  "accesstoken",
  "refreshtoken",
  "idtoken",
  "authtoken",
  "jwt",
]);

/** `<qualifier> key` pairs (api_key, private-key, secretKey …); `key` alone is not secret. */
const KEY_QUALIFIERS: ReadonlySet<string> = new Set([
  "api",
  "private",
  "secret",
  "access",
  "encryption",
  "signing",
  "master",
  "ssh",
  "client",
]);

/** `<first> <number>` pairs: card_number, account_no, routing_num … */
const NUMBER_PAIRS: ReadonlySet<string> = new Set(["card", "cc", "account", "acct", "routing"]);
const NUMBER_WORDS: ReadonlySet<string> = new Set(["number", "num", "no", "nr"]);

/** `<qualifier> code` pairs: security_code, verification_code, mfa_code …; `code` alone is not secret. */
const CODE_QUALIFIERS: ReadonlySet<string> = new Set([
  "security",
  "verification",
  "verify",
  "mfa",
  "otp",
  "sms",
  "access",
  "pin",
  "recovery",
  "backup",
  "card",
]);

/** Unambiguous fragments also found inside all-lowercase run-together names ("dbpassword"). */
const SECRET_FRAGMENTS: readonly string[] = [
  "password",
  "passwd",
  "passphrase",
  "apikey",
  "privatekey",
  "accesstoken",
  "refreshtoken",
  "authtoken",
  "clientsecret",
  "cardnumber",
  "accountnumber",
  "routingnumber",
  "credential",
  "authorization",
  "securitycode",
  "verificationcode",
];

/**
 * Words that turn a secret-looking key into metadata about the secret (token_count,
 * password_length, session_ttl, auth_type). Values under such keys are still scanned for
 * secret shapes.
 */
const META_WORDS: ReadonlySet<string> = new Set([
  "count",
  "counts",
  "used",
  "usage",
  "limit",
  "limits",
  "budget",
  "type",
  "kind",
  "length",
  "len",
  "ttl",
  "expiry",
  "expires",
  "expiration",
  "max",
  "min",
  "total",
  "input",
  "output",
  "prompt",
  "completion",
  "enabled",
  "required",
]);

const WORD_RE = /[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+/g;

function splitWords(key: string): string[] {
  const m = key.match(WORD_RE);
  return m === null ? [] : m.map((w) => w.toLowerCase());
}

/** The built-in key-name rule (exported for tests and docs). */
export function isSecretKeyName(key: string): boolean {
  const words = splitWords(key);
  if (words.length === 0) return false;
  let secret = false;
  for (let i = 0; i < words.length && !secret; i++) {
    const w = words[i] as string;
    if (SECRET_WORDS.has(w)) secret = true;
    else if (i > 0) {
      const prev = words[i - 1] as string;
      if ((w === "key" || w === "keys") && KEY_QUALIFIERS.has(prev)) secret = true;
      else if (NUMBER_WORDS.has(w) && NUMBER_PAIRS.has(prev)) secret = true;
      else if ((w === "code" || w === "codes") && CODE_QUALIFIERS.has(prev)) secret = true;
    }
  }
  if (!secret) {
    const joined = words.join("");
    secret = SECRET_FRAGMENTS.some((f) => joined.includes(f));
  }
  if (!secret) return false;
  return !words.some((w) => META_WORDS.has(w));
}

// ---------------------------------------------------------------------------
// Secret values
// ---------------------------------------------------------------------------

type Kind =
  | "pem"
  | "jwt"
  | "bearer"
  | "basic"
  | "aws"
  | "github"
  | "slack"
  | "stripe"
  | "openai"
  | "google"
  | "url_password"
  | "assignment"
  | "card"
  | "iban"
  | "entropy";

interface Span {
  start: number;
  end: number;
  /** What is hashed (normalized for cards and IBANs so equal values correlate). */
  value: string;
}

/**
 * Fixed-shape secrets, one alternation so a string is scanned once. The group that matched
 * names the kind; for bearer/basic/url-password/assignment only the credential group is
 * replaced.
 */
const SHAPES_RE = new RegExp(
  [
    // 1 PEM private key block (to END or to end of text when cut)
    /(-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|$))/
      .source,
    // 2 JWT / JWS (compact, signature may be empty)
    /(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)/.source,
    // 3 Bearer credential
    /\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+([A-Za-z0-9._~+/-]{12,}=*)/.source,
    // 4 Basic credential (checked: decodes to user:pass)
    /\bBasic\s+([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])/.source,
    // 5 AWS access key id
    /\b((?:AKIA|ASIA)[A-Z0-9]{16})\b/.source,
    // 6 GitHub tokens
    /\b((?:gh[pousr]_[A-Za-z0-9]{30,255})|(?:github_pat_[A-Za-z0-9_]{22,255}))/.source,
    // 7 Slack tokens
    /\b(xox[abporse]-[A-Za-z0-9-]{10,})/.source,
    // 8 Stripe secret / restricted keys
    /\b((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,})/.source,
    // 9 OpenAI / Anthropic style keys
    /\b(sk-(?:ant-)?[A-Za-z0-9_-]{20,})/.source,
    // 10 Google API keys
    /\b(AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])/.source,
    // 11 password in a URL's userinfo
    /\b[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s:@/?#]*:([^\s@/?#]+)@/.source,
    // 12 key, 13 value: `password=…`, `"token": "…"`, `api_key: …` in free text
    /(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9_.-]{1,40})["']?[ \t]{0,3}[:=][ \t]{0,3}["']?((?:(?:Bearer|Basic|Token|Digest|Bot)[ \t]+)?[^\s"'&,;<>]+)/
      .source,
  ].join("|"),
  "dg",
);

/** Cheap literal check: without one of these triggers SHAPES_RE cannot match. */
const SHAPES_QUICK_RE =
  /-----BEGIN|eyJ|[Bb][Ee][Aa][Rr][Ee][Rr]|Basic|A[KS]IA|gh[pousr]_|github_pat_|xox|k_(?:live|test)_|sk-|AIza|[:=]/;

const SHAPE_KINDS: readonly Kind[] = [
  "pem",
  "jwt",
  "bearer",
  "basic",
  "aws",
  "github",
  "slack",
  "stripe",
  "openai",
  "google",
  "url_password",
];

/**
 * Runs of digit groups separated by up to three of space, dash, dot, slash, underscore
 * (fullwidth forms are folded to ASCII first); at least 13 digits.
 */
const CARD_RUN_RE = /(?<![0-9])[0-9]+(?:[ \-./_\u00a0]{1,3}[0-9]+)*(?![0-9])/g;
const CARD_QUICK_RE = /[0-9](?:[ \-./_\u00a0]{0,3}[0-9]){12}/;
/** Fullwidth digits U+FF10–FF19 and fullwidth separators (same length once folded). */
const FULLWIDTH_RE = /[\uff10-\uff19\uff0d\uff0e\uff0f\uff3f\u3000]/;
const FULLWIDTH_ALL_RE = /[\uff10-\uff19\uff0d\uff0e\uff0f\uff3f\u3000]/g;
/** A digit group that may be part of a card split across array elements. */
const ARRAY_GROUP_RE = /^[ \-./_]*([0-9]{3,6})[ \-./_]*$/;
/** UUIDs and hex digests (trace ids, SHAs): digits inside them are not card numbers. */
const HEX_ID_RE =
  /[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|(?<![0-9A-Za-z])(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32,}(?![0-9A-Za-z])/g;
const IBAN_RE = /(?<![A-Za-z0-9])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32})/g;
const IBAN_QUICK_RE = /[A-Z]{2}[0-9]{2}/;
const ENTROPY_RUN_RE = /[A-Za-z0-9+/=_-]{32,}/g;
const UUID_EXACT_RE =
  /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const UUID_RE = /[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/g;

/** Countries that use IBANs (ISO 3166 alpha-2). */
const IBAN_COUNTRIES: ReadonlySet<string> = new Set(
  (
    "AD AE AL AT AZ BA BE BG BH BI BR BY CH CR CY CZ DE DJ DK DO EE EG ES FI FK FO FR GB GE GI GL GR " +
    "GT HN HR HU IE IL IQ IS IT JO KW KZ LB LC LI LT LU LV LY MC MD ME MK MN MR MT MU NI NL NO OM PK " +
    "PL PS PT QA RO RS RU SA SC SD SE SI SK SM SO ST SV TL TN TR UA VA VG XK YE"
  ).split(" "),
);

export function luhnValid(digits: string): boolean {
  let sum = 0;
  let dbl = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 === 0;
}

/** `digits` (13–19 of them) is a Luhn-valid card number. */
function isCardDigits(digits: string): boolean {
  return digits.length >= 13 && digits.length <= 19 && luhnValid(digits);
}

/** Fullwidth digits and separators as ASCII; every character keeps its offset. */
function foldFullwidth(text: string): string {
  if (!FULLWIDTH_RE.test(text)) return text;
  return text.replace(FULLWIDTH_ALL_RE, (c) => {
    const code = c.charCodeAt(0);
    if (code === 0x3000) return " ";
    return String.fromCharCode(code - 0xfee0);
  });
}

/**
 * Card numbers among consecutive digit groups: each found card as [first group, last group,
 * its digits]. Groups are tried earliest start first, longest first. `plainJoin(k)` says
 * whether groups k and k+1 are joined the classic way (one space or one dash), where any
 * group length goes; other joins (dots, slashes, underscores, several characters, array
 * elements) need groups of 3–6 digits, as printed cards have, so that lists of prices,
 * dates and versions are not read as cards.
 */
function cardGroups(
  groups: readonly string[],
  plainJoin: (k: number) => boolean,
): Array<[number, number, string]> {
  const found: Array<[number, number, string]> = [];
  let i = 0;
  while (i < groups.length) {
    // the furthest group reachable from i through acceptable joins, within 19 digits
    let reach = i;
    let total = (groups[i] as string).length;
    while (reach + 1 < groups.length) {
      const a = (groups[reach] as string).length;
      const b = (groups[reach + 1] as string).length;
      if (total + b > 19) break;
      if (!plainJoin(reach) && (a < 3 || a > 6 || b < 3 || b > 6)) break;
      total += b;
      reach++;
    }
    let hit = -1;
    let digits = "";
    for (let j = reach; j >= i; j--) {
      let d = "";
      for (let k = i; k <= j; k++) d += groups[k] as string;
      if (isCardDigits(d)) {
        hit = j;
        digits = d;
        break;
      }
    }
    if (hit >= 0) {
      found.push([i, hit, digits]);
      i = hit + 1;
    } else i++;
  }
  return found;
}

/** ISO 13616 check: move the first four characters to the end, letters → numbers, mod 97 = 1. */
export function ibanValid(compact: string): boolean {
  if (compact.length < 15 || compact.length > 34) return false;
  if (!IBAN_COUNTRIES.has(compact.slice(0, 2))) return false;
  const s = compact.slice(4) + compact.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) rem = (rem * 10 + (c - 48)) % 97;
    else if (c >= 65 && c <= 90) rem = (rem * 100 + (c - 55)) % 97;
    else return false;
  }
  return rem === 1;
}

const counts = new Uint16Array(128);

/** Shannon entropy in bits per character (ASCII input). */
export function shannonEntropy(s: string): number {
  counts.fill(0);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    counts[c & 127] = (counts[c & 127] ?? 0) + 1;
  }
  let h = 0;
  const n = s.length;
  for (let i = 0; i < 128; i++) {
    const k = counts[i] ?? 0;
    if (k > 0) {
      const p = k / n;
      h -= p * Math.log2(p);
    }
  }
  return h;
}

/**
 * The generic heuristic: ≥ 32 characters of [A-Za-z0-9+/=_-], Shannon entropy > 4.0 bits/char,
 * at least one digit and one letter. UUIDs inside the run are not counted; runs starting
 * with "/" are treated as paths and judged segment by segment.
 */
function looksHighEntropy(run: string): boolean {
  if (run.length < 32) return false;
  if (run.charCodeAt(0) === 47 /* "/" */) return run.split("/").some(looksHighEntropy);
  if (run.length === 36 && UUID_EXACT_RE.test(run)) return false;
  if (run.length >= 36 && UUID_RE.test(run)) {
    UUID_RE.lastIndex = 0;
    return run.split(UUID_RE).some(looksHighEntropy);
  }
  UUID_RE.lastIndex = 0;
  if (!/[0-9]/.test(run) || !/[A-Za-z]/.test(run)) return false;
  return shannonEntropy(run) > 4.0;
}

function isBasicCredential(b64: string): boolean {
  const text = Buffer.from(b64, "base64").toString("latin1");
  const colon = text.indexOf(":");
  return colon > 0 && /^[\x20-\x7e]+$/.test(text);
}

function overlaps(spans: readonly Span[], start: number, end: number): boolean {
  for (const s of spans) if (start < s.end && s.start < end) return true;
  return false;
}

function findCards(raw: string, spans: Span[]): void {
  const text = foldFullwidth(raw);
  if (!CARD_QUICK_RE.test(text)) return;
  const hexIds: Span[] = [];
  if (text.length >= 32) {
    HEX_ID_RE.lastIndex = 0;
    let h: RegExpExecArray | null;
    while ((h = HEX_ID_RE.exec(text)) !== null)
      hexIds.push({ start: h.index, end: h.index + h[0].length, value: "" });
  }
  CARD_RUN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = CARD_RUN_RE.exec(text)) !== null) {
    const run = m[0];
    const base = m.index;
    // groups of digits with their offsets inside the run
    const groups: { start: number; end: number; digits: string }[] = [];
    const g = /[0-9]+/g;
    let gm: RegExpExecArray | null;
    let total = 0;
    while ((gm = g.exec(run)) !== null) {
      groups.push({ start: gm.index, end: gm.index + gm[0].length, digits: gm[0] });
      total += gm[0].length;
    }
    if (total < 13) continue;
    const found = cardGroups(
      groups.map((x) => x.digits),
      (k) => {
        const gap = run.slice(
          (groups[k] as { end: number }).end,
          (groups[k + 1] as { start: number }).start,
        );
        return gap === " " || gap === "-";
      },
    );
    for (const [i, j, digits] of found) {
      const start = base + (groups[i] as { start: number }).start;
      const end = base + (groups[j] as { end: number }).end;
      if (!overlaps(spans, start, end) && !overlaps(hexIds, start, end))
        spans.push({ start, end, value: digits });
    }
  }
}

function findIbans(text: string, spans: Span[]): void {
  if (!IBAN_QUICK_RE.test(text)) return;
  IBAN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = IBAN_RE.exec(text)) !== null) {
    const raw = m[1] as string;
    // compact characters and their offsets, then the longest valid prefix (a greedy match
    // may have swallowed a following code such as " EUR")
    const offs: number[] = [];
    let compact = "";
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] !== " ") {
        compact += raw[i];
        offs.push(i);
      }
    }
    for (let len = compact.length; len >= 15; len--) {
      const c = compact.slice(0, len);
      if (ibanValid(c)) {
        const start = m.index;
        const end = m.index + (offs[len - 1] as number) + 1;
        if (!overlaps(spans, start, end)) spans.push({ start, end, value: c });
        IBAN_RE.lastIndex = end;
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Mask ops
// ---------------------------------------------------------------------------

type OpKind = "remove" | "hash" | "replace" | "reveal";
interface CompiledOp {
  op: OpKind;
  segs: readonly string[];
  value: unknown;
}
interface Active {
  c: CompiledOp;
  i: number;
}

const NO_ACTIVE: readonly Active[] = [];
const REMOVE = Symbol("remove");

function parsePointer(path: string): string[] | string {
  if (path === "") return [];
  if (!path.startsWith("/")) return `path ${JSON.stringify(path)} must be "" or start with "/"`;
  const raw = path.slice(1).split("/");
  if (raw.length > MAX_PATH_SEGMENTS) return `path ${JSON.stringify(path)} is too deep`;
  const segs: string[] = [];
  for (const r of raw) {
    if (/~(?![01])/.test(r))
      return `path ${JSON.stringify(path)} has a "~" not followed by 0 or 1 (RFC 6901)`;
    segs.push(r.replace(/~1/g, "/").replace(/~0/g, "~"));
  }
  return segs;
}

function isJsonValue(v: unknown, depth: number): boolean {
  if (depth > 32) return false;
  if (v === null || typeof v === "string" || typeof v === "boolean") return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isJsonValue(x, depth + 1));
  if (typeof v === "object") {
    const proto = Object.getPrototypeOf(v) as unknown;
    if (proto !== Object.prototype && proto !== null) return false;
    return Object.values(v as Record<string, unknown>).every((x) => isJsonValue(x, depth + 1));
  }
  return false;
}

function cloneJson(v: unknown): unknown {
  return v === undefined ? undefined : (JSON.parse(JSON.stringify(v)) as unknown);
}

// ---------------------------------------------------------------------------
// Values replaced once, replaced wherever free text quotes them
// ---------------------------------------------------------------------------

/** Values shorter than this are not looked for in free text (too many innocent matches). */
const MIN_QUOTED_LENGTH = 3;
/** At most this many values are looked for (bounds the search; the first ones are kept). */
const MAX_SEEN = 256;

/**
 * The caller values one or more redactions replaced, each with its replacement, so that free
 * text quoting one of them (a reason message, a refusal message, a tool name) can quote the
 * replacement instead. Collected by `Redactor.redact(value, mask, seen)` for: values under
 * secret keys (every string or number inside an object or array hashed as a whole), values
 * the mask hashed, removed or replaced, and secret shapes found inside strings. Values the
 * mask reveals are not collected. A quoted value is found as a whole token (not inside a
 * longer word or number) and also in its JSON-escaped form.
 */
export class SecretsSeen {
  private readonly map = new Map<string, string>();
  private re: RegExp | undefined;

  get size(): number {
    return this.map.size;
  }

  add(clear: string, replacement: string): void {
    if (clear.length < MIN_QUOTED_LENGTH || clear === replacement || this.map.size >= MAX_SEEN)
      return;
    if (clear === REDACTED || HASH_OUTPUT_RE.test(clear) || this.map.has(clear)) return;
    this.map.set(clear, replacement);
    const escaped = JSON.stringify(clear).slice(1, -1);
    if (escaped !== clear) this.map.set(escaped, replacement);
    this.re = undefined;
  }

  /** `text` with every whole occurrence of a collected value replaced. */
  apply(text: string): string {
    if (this.map.size === 0) return text;
    if (this.re === undefined) {
      const alts = [...this.map.keys()]
        .sort((a, b) => b.length - a.length)
        .map((k) => k.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&"));
      this.re = new RegExp(`(?<![A-Za-z0-9])(?:${alts.join("|")})(?![A-Za-z0-9])`, "g");
    }
    return text.replace(this.re, (m) => this.map.get(m) ?? m);
  }
}

/** Every string and integer inside `v` (a value replaced as a whole), as text. */
function leaves(v: unknown, out: string[], depth = 0): string[] {
  if (typeof v === "string") out.push(v);
  else if (typeof v === "number" && Number.isFinite(v)) out.push(String(v));
  else if (typeof v === "bigint") out.push(v.toString());
  else if (v !== null && typeof v === "object" && depth < 32 && !ArrayBuffer.isView(v)) {
    for (const x of Object.values(v as Record<string, unknown>)) leaves(x, out, depth + 1);
  }
  return out;
}

// ---------------------------------------------------------------------------
// The redactor
// ---------------------------------------------------------------------------

interface Ctx {
  depth: number;
  /** a default (secret key) applies to this node */
  secret: boolean;
  /** the mask revealed this node or an ancestor: defaults are off */
  revealed: boolean;
  active: readonly Active[];
  stack: object[];
  /** collects what is replaced; quoted values are replaced in strings */
  seen: SecretsSeen | undefined;
}

export class Redactor {
  private readonly key: Buffer;
  private readonly keyId: string;
  private readonly erase: boolean;
  private readonly maxStringLength: number;
  private readonly maxDepth: number;
  private readonly extra: readonly RegExp[];
  private readonly keyCache = new Map<string, boolean>();
  private readonly maskCache = new WeakMap<readonly MaskOp[], CompiledOp[]>();

  constructor(opts: RedactorOptions) {
    if (!Buffer.isBuffer(opts.hmacKey) || opts.hmacKey.length < 16)
      throw new TypeError("Redactor: hmacKey must be a Buffer of at least 16 bytes");
    this.key = Buffer.from(opts.hmacKey);
    const keyId =
      opts.keyId ??
      createHash("sha256")
        .update("toolgate-redact-key-id\0")
        .update(this.key)
        .digest("hex")
        .slice(0, 8);
    if (!KEY_ID_RE.test(keyId))
      throw new TypeError("Redactor: keyId must match [A-Za-z0-9._-]{1,32}");
    this.keyId = keyId;
    this.erase = opts.mode === "erase";
    this.maxStringLength = opts.maxStringLength ?? 1024;
    this.maxDepth = opts.maxDepth ?? 16;
    if (!Number.isInteger(this.maxStringLength) || this.maxStringLength < 1)
      throw new TypeError("Redactor: maxStringLength must be a positive integer");
    if (!Number.isInteger(this.maxDepth) || this.maxDepth < 1)
      throw new TypeError("Redactor: maxDepth must be a positive integer");
    // a global/sticky RegExp keeps state between .test() calls: drop those flags
    this.extra = (opts.extraSecretKeys ?? []).map(
      (r) => new RegExp(r.source, r.flags.replace(/[gy]/g, "")),
    );
  }

  /**
   * Keyed hash: "hmac-sha256:<keyId>:<first 128 bits, base64url>". Strings are hashed as their
   * UTF-8 text, anything else as its canonical JSON (`canonicalizeAny`: RFC 8785 for JSON
   * values, and a text for every other value too).
   */
  hash(value: unknown): string {
    const text = typeof value === "string" ? value : canonicalizeAny(value);
    const mac = createHmac("sha256", this.key).update(text, "utf8").digest();
    return `hmac-sha256:${this.keyId}:${mac.subarray(0, 16).toString("base64url")}`;
  }

  /** Checks policy-supplied mask ops: the ops, or a text naming the first problem. */
  static validateMask(mask: unknown): MaskOp[] | string {
    if (!Array.isArray(mask)) return "mask must be an array of ops";
    if (mask.length > MAX_MASK_OPS) return `mask has more than ${MAX_MASK_OPS} ops`;
    const out: MaskOp[] = [];
    for (let i = 0; i < mask.length; i++) {
      const o: unknown = mask[i];
      const at = `mask[${i}]`;
      if (!isObject(o)) return `${at} must be an object`;
      const rec = o;
      const { op, path } = rec;
      if (op !== "remove" && op !== "hash" && op !== "replace" && op !== "reveal")
        return `${at}.op must be one of remove, hash, replace, reveal`;
      if (typeof path !== "string") return `${at}.path must be a string (JSON Pointer)`;
      const allowed = op === "replace" ? ["op", "path", "value"] : ["op", "path"];
      const unknownKey = Object.keys(rec).find((k) => !allowed.includes(k));
      if (unknownKey !== undefined)
        return `${at} has an unknown member ${JSON.stringify(unknownKey)}`;
      const segs = parsePointer(path);
      if (typeof segs === "string") return `${at}: ${segs}`;
      if (op === "remove" && segs.length === 0) return `${at}: cannot remove the whole value`;
      if (op === "replace") {
        if (!("value" in rec) || rec.value === undefined) return `${at}.value is required`;
        if (!isJsonValue(rec.value, 0)) return `${at}.value must be plain JSON`;
        out.push({ op, path, value: cloneJson(rec.value) });
      } else out.push({ op, path });
    }
    return out;
  }

  /**
   * A new redacted copy of `value`; the input is never mutated. Throws TypeError on an invalid
   * mask. With `seen`, what this call replaces is added to it, and strings quoting a value
   * already in it quote its replacement (see SecretsSeen).
   */
  redact<T>(value: T, mask?: readonly MaskOp[], seen?: SecretsSeen): T {
    let active: readonly Active[] = NO_ACTIVE;
    if (mask !== undefined && mask.length > 0) {
      active = this.compile(mask).map((c) => ({ c, i: 0 }));
    }
    const out = this.walk(value, {
      depth: 0,
      secret: false,
      revealed: false,
      active,
      stack: [],
      seen,
    });
    return (out === REMOVE ? undefined : out) as T;
  }

  /** Built-in rule or an extra pattern; cached. */
  isSecretKey(key: string): boolean {
    let r = this.keyCache.get(key);
    if (r === undefined) {
      r = isSecretKeyName(key) || this.extra.some((re) => re.test(key));
      if (this.keyCache.size >= 4096) this.keyCache.clear();
      this.keyCache.set(key, r);
    }
    return r;
  }

  /**
   * Redacts secret shapes inside a string, keeping the rest of the text (not cut: `redact` of
   * a string also cuts it). With `seen`, values in it are replaced first, and what is found
   * is added to it.
   */
  redactText(raw: string, seen?: SecretsSeen): string {
    const text = seen === undefined ? raw : seen.apply(raw);
    if (!worthScanning(text)) return text;
    const spans = this.findSecrets(text);
    if (spans.length === 0) return text;
    spans.sort((a, b) => a.start - b.start);
    let out = "";
    let pos = 0;
    for (const s of spans) {
      const replacement = this.secretText(s.value);
      seen?.add(text.slice(s.start, s.end), replacement);
      out += text.slice(pos, s.start) + replacement;
      pos = s.end;
    }
    return out + text.slice(pos);
  }

  // -------------------------------------------------------------------------

  private compile(mask: readonly MaskOp[]): CompiledOp[] {
    const cached = this.maskCache.get(mask);
    if (cached !== undefined) return cached;
    const valid = Redactor.validateMask(mask);
    if (typeof valid === "string") throw new TypeError(`invalid redaction mask: ${valid}`);
    const compiled = valid.map((o) => ({
      op: o.op,
      segs: parsePointer(o.path) as string[],
      value: o.op === "replace" ? o.value : undefined,
    }));
    this.maskCache.set(mask, compiled);
    return compiled;
  }

  private secretText(value: string): string {
    return this.erase ? REDACTED : this.hash(value);
  }

  /** What a default does to a whole value under a secret key. */
  private secretValue(v: unknown, seen: SecretsSeen | undefined): unknown {
    if (v === null || v === undefined) return v;
    let out: string;
    if (typeof v === "string") {
      if (v === REDACTED || HASH_OUTPUT_RE.test(v)) return v; // already redacted: idempotent
      out = this.erase ? REDACTED : this.hash(normalizeSecretString(v));
    } else if (this.erase) out = REDACTED;
    else if (typeof v === "number" || typeof v === "bigint") out = this.hash(numberDigits(v) ?? v);
    else out = this.hash(v);
    if (seen !== undefined && typeof v !== "boolean") Redactor.collect(seen, v, out);
    return out;
  }

  /** Adds every string and number inside `v` (replaced by `replacement`) to `seen`. */
  private static collect(seen: SecretsSeen, v: unknown, replacement: string): void {
    for (const leaf of leaves(v, [])) seen.add(leaf, replacement);
  }

  private findSecrets(text: string): Span[] {
    const spans: Span[] = [];
    SHAPES_RE.lastIndex = 0;
    let m: RegExpExecArray | null;
    const shaped = SHAPES_QUICK_RE.test(text);
    while (shaped && (m = SHAPES_RE.exec(text)) !== null) {
      if (m[0].length === 0) {
        SHAPES_RE.lastIndex++;
        continue;
      }
      let group = -1;
      for (let g = 1; g <= 11; g++) {
        if (m[g] !== undefined) {
          group = g;
          break;
        }
      }
      let secret: string;
      if (group > 0) {
        secret = m[group] as string;
        const kind = SHAPE_KINDS[group - 1];
        if (kind === "basic" && !isBasicCredential(secret)) continue;
      } else {
        // key=value in free text
        const key = m[12] as string;
        const val = m[13] as string;
        if (!this.isSecretKey(key)) {
          // the key was not secret: rescan from just after it so a secret inside the
          // value (e.g. `note: eyJ…`) still gets its chance
          SHAPES_RE.lastIndex = m.index + key.length;
          continue;
        }
        // a value redacted before (`password=hmac-sha256:…`): redacting twice changes nothing
        if (REPLACED_VALUE_RE.test(val)) continue;
        secret = val;
      }
      const idx = m.indices?.[group > 0 ? group : 13];
      if (idx === undefined) continue;
      const start = idx[0];
      let end = idx[1];
      if (group < 0 && (secret.startsWith("{") || secret.startsWith("["))) {
        // a JSON object or array under a secret key: the whole value, to its closing bracket
        end = closingBracket(text, start);
        secret = text.slice(start, end);
        SHAPES_RE.lastIndex = end;
      }
      if (!overlaps(spans, start, end)) spans.push({ start, end, value: secret });
    }
    findIbans(text, spans);
    findCards(text, spans);
    if (text.length >= 32) {
      ENTROPY_RUN_RE.lastIndex = 0;
      while ((m = ENTROPY_RUN_RE.exec(text)) !== null) {
        const start = m.index;
        const end = start + m[0].length;
        if (!overlaps(spans, start, end) && looksHighEntropy(m[0]))
          spans.push({ start, end, value: m[0] });
      }
    }
    return spans;
  }

  private truncate(s: string): string {
    if (s.length <= this.maxStringLength) return s;
    // cut before (redacting twice changes nothing)
    const done = CUT_SUFFIX_RE.exec(s);
    if (done !== null && done.index <= this.maxStringLength) return s;
    let cut = this.maxStringLength;
    const c = s.charCodeAt(cut - 1);
    if (c >= 0xd800 && c <= 0xdbff) cut--; // do not split a surrogate pair
    return `${s.slice(0, cut)}…[+${s.length - cut} chars]`;
  }

  private static advance(active: readonly Active[], key: string): readonly Active[] {
    if (active.length === 0) return NO_ACTIVE;
    const next: Active[] = [];
    for (const a of active) {
      const seg = a.c.segs[a.i];
      if (seg !== undefined && (seg === "*" || seg === key)) next.push({ c: a.c, i: a.i + 1 });
    }
    return next.length > 0 ? next : NO_ACTIVE;
  }

  /**
   * A card number split across consecutive array elements (`["4111", "1111", "1111",
   * "1111"]`, or numbers): each element of it becomes the card's replacement. Elements are
   * groups of 3–6 digits (strings, optionally with separators around them, or integers);
   * `plain[i] === false` marks an element a mask op reached, which is left alone.
   */
  private splitCards(out: unknown[], plain: boolean[] | undefined): void {
    // at least three groups (13 digits of groups of at most 6) before any work
    let candidates = 0;
    for (const x of out) {
      if (
        typeof x === "number"
          ? x >= 100 && x < 1_000_000
          : typeof x === "string" && x.length >= 3 && x.length <= 12
      )
        candidates++;
    }
    if (candidates < 3) return;
    const groups: string[] = [];
    const at: number[] = [];
    const flush = (): void => {
      let total = 0;
      for (const g of groups) total += g.length;
      if (total >= 13) {
        for (const [i, j, digits] of cardGroups(groups, () => false)) {
          const replacement = this.secretText(digits);
          for (let k = i; k <= j; k++) out[at[k] as number] = replacement;
        }
      }
      groups.length = 0;
      at.length = 0;
    };
    for (let i = 0; i < out.length; i++) {
      const x = out[i];
      let digits: string | undefined;
      if (plain?.[i] !== false) {
        if (typeof x === "string" && x.length <= 12)
          digits = ARRAY_GROUP_RE.exec(foldFullwidth(x))?.[1];
        else if (typeof x === "number" && Number.isSafeInteger(x) && x >= 100 && x < 1_000_000)
          digits = String(x);
      }
      if (digits === undefined) flush();
      else {
        groups.push(digits);
        at.push(i);
      }
    }
    flush();
  }

  private walk(v: unknown, ctx: Ctx): unknown {
    let revealed = ctx.revealed;
    let deeper = false;
    if (ctx.active.length > 0) {
      let terminal: CompiledOp | undefined;
      for (const a of ctx.active) {
        if (a.i < a.c.segs.length) {
          deeper = true;
          continue;
        }
        const op = a.c.op;
        // strictest explicit op wins: remove > hash > replace; reveal only lifts defaults
        if (op === "remove") terminal = a.c;
        else if (op === "hash" && terminal?.op !== "remove") terminal = a.c;
        else if (op === "replace" && terminal === undefined) terminal = a.c;
        else if (op === "reveal") revealed = true;
      }
      if (terminal !== undefined) {
        if (terminal.op === "hash") {
          if (v === undefined) return v;
          const h = this.hash(v);
          if (ctx.seen !== undefined) Redactor.collect(ctx.seen, v, h);
          return h;
        }
        // removed or replaced: free text quoting the value quotes "[REDACTED]"
        if (ctx.seen !== undefined) Redactor.collect(ctx.seen, v, REDACTED);
        return terminal.op === "remove" ? REMOVE : cloneJson(terminal.value);
      }
    }
    const secret = ctx.secret && !revealed;
    const seen = ctx.seen;

    if (v === null || v === undefined) return v;
    switch (typeof v) {
      case "string": {
        if (secret) return this.secretValue(v, seen);
        const s = revealed ? v : this.redactText(v, seen);
        return this.truncate(s);
      }
      case "number":
      case "bigint": {
        if (secret) return this.secretValue(v, seen);
        if (!revealed) {
          const digits = numberDigits(v);
          if (digits !== undefined && isCardDigits(digits)) {
            const out = this.secretText(digits);
            seen?.add(String(v), out);
            return out;
          }
        }
        return typeof v === "bigint" ? v.toString() : v;
      }
      case "boolean":
        return secret ? this.secretValue(v, seen) : v;
      case "object":
        break;
      default:
        return undefined; // functions, symbols: not data
    }

    const obj = v;
    if (secret && !deeper) return this.secretValue(v, seen);
    if (ctx.depth >= this.maxDepth) return TOO_DEEP;
    if (ctx.stack.includes(obj)) return CIRCULAR;
    if (ArrayBuffer.isView(obj)) return `[BINARY ${obj.byteLength} bytes]`;
    const withToJson = obj as { toJSON?: unknown };
    if (typeof withToJson.toJSON === "function") {
      return this.walk((withToJson.toJSON as () => unknown).call(obj), {
        ...ctx,
        active: NO_ACTIVE,
        revealed,
        secret,
      });
    }

    const depth = ctx.depth + 1;
    const active = ctx.active;
    const stack = ctx.stack;
    stack.push(obj);
    try {
      if (Array.isArray(obj)) {
        const out: unknown[] = [];
        // elements no mask op reaches, by index in `out`: candidates for split card numbers
        let plain: boolean[] | undefined;
        for (let i = 0; i < obj.length; i++) {
          const elementOps = active.length === 0 ? NO_ACTIVE : Redactor.advance(active, String(i));
          const r = this.walk(obj[i] as unknown, {
            depth,
            secret,
            revealed,
            active: elementOps,
            stack,
            seen,
          });
          if (r !== REMOVE) {
            if (elementOps !== NO_ACTIVE) (plain ??= [])[out.length] = false;
            out.push(r);
          }
        }
        if (!revealed && !secret && out.length > 2) this.splitCards(out, plain);
        return out;
      }
      const out: Record<string, unknown> = {};
      const src = obj as Record<string, unknown>;
      let n = 0;
      for (const key of Object.keys(src)) {
        const r = this.walk(src[key], {
          depth,
          secret: !revealed && (secret || this.isSecretKey(key)),
          revealed,
          active: Redactor.advance(active, key),
          stack,
          seen,
        });
        if (r === REMOVE || typeof r === "function" || typeof r === "symbol") continue;
        let outKey = key;
        if (!revealed && worthScanning(key)) {
          outKey = this.redactText(key, seen);
          if (outKey !== key && Object.prototype.hasOwnProperty.call(out, outKey))
            outKey = `${outKey}#${++n}`;
        }
        if (outKey === "__proto__")
          Object.defineProperty(out, outKey, {
            value: r,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        else out[outKey] = r;
      }
      return out;
    } finally {
      stack.pop();
    }
  }
}

/** The suffix `truncate` appends. */
const CUT_SUFFIX_RE = /…\[\+[0-9]+ chars\]$/;

/**
 * The end (exclusive) of the JSON object or array starting at `start` in `text` (strings and
 * escapes respected), or the end of the text when it is never closed.
 */
function closingBracket(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \\ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) depth++;
    else if (c === 125 /* } */ || c === 93 /* ] */) {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return text.length;
}

/** Decimal digits of an integer number (sign dropped), or undefined. */
function numberDigits(v: number | bigint): string | undefined {
  if (typeof v === "bigint") return (v < 0n ? -v : v).toString();
  if (!Number.isInteger(v)) return undefined;
  const s = Math.abs(v).toString();
  return /^[0-9]+$/.test(s) ? s : undefined;
}

/** Card numbers and IBANs hash as their compact form so equal values correlate. */
function normalizeSecretString(s: string): string {
  const t = foldFullwidth(s).trim();
  if (/^[0-9][0-9 \-./_\u00a0]{11,60}[0-9]$/.test(t)) {
    const d = t.replace(/[^0-9]/g, "");
    if (isCardDigits(d)) return d;
  }
  if (/^[A-Za-z]{2}[0-9]{2}[A-Za-z0-9 ]{11,40}$/.test(t)) {
    const c = t.replace(/ /g, "").toUpperCase();
    if (ibanValid(c)) return c;
  }
  return s;
}
