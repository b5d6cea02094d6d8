/**
 * Console sessions: a sealed cookie (AES-256-GCM, a 12-byte random IV, the
 * purpose as additional data), so the server keeps no session table and a
 * client can neither read nor forge one. The key comes from
 * console.session_key_file (≥ 32 bytes; its SHA-256 is the key, so every
 * replica sharing the file opens each other's cookies) or is random per
 * process. A cookie that fails to open — another key, tampered, expired,
 * malformed — is no session at all.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { toolgateError } from "../errors";

export const SESSION_COOKIE = "tg_console";
export const LOGIN_COOKIE = "tg_console_login";
/** Where a login started from a console link goes back to (sealed, beside the login state). */
export const NEXT_COOKIE = "tg_console_next";
/** A sealed cookie larger than this is refused unread. */
const MAX_SEALED = 4096;

export interface Session {
  /** The person (OIDC `sub`, or the development user). */
  sub: string;
  roles: string[];
  /** The per-session CSRF token (base64url, 32 random bytes). */
  csrf: string;
  /** Epoch seconds. */
  exp: number;
  /** How the person logged in. */
  via: "oidc" | "dev";
  /** The OIDC issuer, when via oidc. */
  iss?: string;
}

/** What a login in progress keeps between /auth/start and /auth/callback. */
export interface LoginState {
  state: string;
  nonce: string;
  verifier: string;
  exp: number;
}

export class Sealer {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error("the session key must be 32 bytes");
  }

  /** From console.session_key_file (≥ 32 bytes, hashed to 32), or random per process. */
  static fromFile(path: string | null): Sealer {
    if (path === null) return new Sealer(randomBytes(32));
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `console.session_key_file ${path} cannot be read: ${(e as Error).message}`,
      );
    }
    if (bytes.length < 32)
      throw toolgateError(
        "config_invalid",
        `console.session_key_file ${path} holds ${bytes.length} bytes; at least 32 are needed`,
      );
    return new Sealer(createHash("sha256").update(bytes).digest());
  }

  seal(purpose: string, value: unknown): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    c.setAAD(Buffer.from(purpose));
    const body = Buffer.concat([c.update(JSON.stringify(value), "utf8"), c.final()]);
    return Buffer.concat([iv, body, c.getAuthTag()]).toString("base64url");
  }

  /** The sealed value, or undefined for anything that does not open. */
  open(purpose: string, sealed: string | undefined): unknown {
    if (sealed === undefined || sealed.length > MAX_SEALED || !/^[A-Za-z0-9_-]+$/.test(sealed))
      return undefined;
    const buf = Buffer.from(sealed, "base64url");
    if (buf.length < 12 + 16 + 2) return undefined;
    try {
      const d = createDecipheriv("aes-256-gcm", this.key, buf.subarray(0, 12));
      d.setAAD(Buffer.from(purpose));
      d.setAuthTag(buf.subarray(buf.length - 16));
      const text = Buffer.concat([d.update(buf.subarray(12, buf.length - 16)), d.final()]).toString(
        "utf8",
      );
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }
}

const isStrArray = (v: unknown): v is string[] =>
  Array.isArray(v) && v.length <= 256 && v.every((r) => typeof r === "string" && r.length <= 256);

/** A session from its cookie value, if it opens, has the right shape and is not expired. */
export function openSession(
  sealer: Sealer,
  cookie: string | undefined,
  nowS: number,
): Session | undefined {
  const v = sealer.open("session", cookie) as Record<string, unknown> | undefined;
  if (v === undefined || v === null || typeof v !== "object") return undefined;
  const { sub, roles, csrf, exp, via, iss } = v;
  if (typeof sub !== "string" || sub === "" || sub.length > 256) return undefined;
  if (!isStrArray(roles)) return undefined;
  if (typeof csrf !== "string" || csrf.length < 32) return undefined;
  if (typeof exp !== "number" || !(exp > nowS)) return undefined;
  if (via !== "oidc" && via !== "dev") return undefined;
  return {
    sub,
    roles,
    csrf,
    exp,
    via,
    ...(typeof iss === "string" ? { iss } : {}),
  };
}

export function openLoginState(
  sealer: Sealer,
  cookie: string | undefined,
  nowS: number,
): LoginState | undefined {
  const v = sealer.open("login", cookie) as Record<string, unknown> | undefined;
  if (v === undefined || v === null || typeof v !== "object") return undefined;
  const { state, nonce, verifier, exp } = v;
  if (typeof state !== "string" || typeof nonce !== "string" || typeof verifier !== "string")
    return undefined;
  if (typeof exp !== "number" || !(exp > nowS)) return undefined;
  return { state, nonce, verifier, exp };
}

/** A fresh CSRF token. */
export function newCsrf(): string {
  return randomBytes(32).toString("base64url");
}

/** Constant-time comparison of a submitted token with the session's. */
export function csrfMatches(expected: string, given: unknown): boolean {
  if (typeof given !== "string") return false;
  const a = createHash("sha256").update(expected).digest();
  const b = createHash("sha256").update(given).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

/** The cookies of a request (first value of each name wins; malformed pairs skipped). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined || header.length > 16384) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name !== "" && !out.has(name)) out.set(name, value);
  }
  return out;
}

export interface CookieOptions {
  path: string;
  secure: boolean;
  sameSite: "Strict" | "Lax";
  /** Seconds; 0 deletes. */
  maxAge: number;
}

export function setCookie(name: string, value: string, o: CookieOptions): string {
  return [
    `${name}=${value}`,
    `Path=${o.path}`,
    `Max-Age=${Math.max(0, Math.floor(o.maxAge))}`,
    "HttpOnly",
    `SameSite=${o.sameSite}`,
    ...(o.secure ? ["Secure"] : []),
  ].join("; ");
}
