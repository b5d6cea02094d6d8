import type { webcrypto } from "node:crypto";
import { createPublicKey, KeyObject, type JsonWebKey } from "node:crypto";

type CryptoKey = webcrypto.CryptoKey;
import { readFileSync } from "node:fs";
import type { Logger } from "../shared/log";
import { devPublicKeyPath } from "../shared/paths";

/**
 * The committed development key (config/dev/) is public: anyone can mint
 * tokens with it. toolgate recognises it by its key material — the SPKI bytes
 * of the public key — never by a file name, so a copy under another name, the
 * same key in a JWKS file or served by a JWKS URL is recognised too.
 */
let devSpki: Buffer | undefined;

function devKeySpki(): Buffer {
  devSpki ??= createPublicKey(readFileSync(devPublicKeyPath(), "utf8")).export({
    type: "spki",
    format: "der",
  });
  return devSpki;
}

/** The SPKI DER of a public key (a PEM, a JWK, a KeyObject or a WebCrypto key); undefined when it is none. */
function spkiOf(key: string | JsonWebKey | KeyObject | CryptoKey): Buffer | undefined {
  try {
    const k =
      key instanceof KeyObject
        ? key
        : typeof key === "string"
          ? createPublicKey(key)
          : isCryptoKey(key)
            ? KeyObject.from(key)
            : createPublicKey({ key, format: "jwk" });
    if (k.type === "secret") return undefined;
    const pub = k.type === "private" ? createPublicKey(k) : k;
    return pub.export({ type: "spki", format: "der" });
  } catch {
    return undefined;
  }
}

function isCryptoKey(v: unknown): v is CryptoKey {
  return typeof globalThis.CryptoKey === "function" && v instanceof globalThis.CryptoKey;
}

/** True when `key` is the committed development key (compared by key material). */
export function isDevKey(key: string | JsonWebKey | KeyObject | CryptoKey): boolean {
  const spki = spkiOf(key);
  return spki !== undefined && spki.equals(devKeySpki());
}

/** True when any key of a JWKS document is the development key. */
export function jwksHoldsDevKey(jwks: unknown): boolean {
  if (jwks === null || typeof jwks !== "object" || !Object.hasOwn(jwks, "keys")) return false;
  const keys = (jwks as { keys: unknown }).keys;
  return (
    Array.isArray(keys) &&
    keys.some((k) => k !== null && typeof k === "object" && isDevKey(k as JsonWebKey))
  );
}

/** Says loudly that a port trusts the committed development key. */
export function devKeyWarning(log: Logger, where: string): void {
  log.warn(
    `the development signing key is trusted (${where}): anyone can mint tokens (development only; see config/dev/README.md)`,
    { event: "identity.dev_keys", keys: where },
  );
}
