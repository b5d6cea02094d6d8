/**
 * The redactor's key (audit.hmac_key*): from the environment, a file of at
 * least 16 bytes, or random per process (warned: keyed hashes then correlate
 * only within this run). One reader for the sidecar and `toolgate control`.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { toolgateError } from "../errors";
import type { Logger } from "../shared/log";

/** The compiled `audit.hmac_key*` (config/schema.ts). */
export interface HmacKeySource {
  source: "env" | "file" | "random";
  file: string | null;
  value: string | null;
}

export function loadHmacKey(k: HmacKeySource, log: Logger): { key: Buffer; keyId: string } {
  let key: Buffer;
  if (k.source === "env") key = Buffer.from(k.value ?? "", "utf8");
  else if (k.source === "file") {
    try {
      key = readFileSync(k.file ?? "");
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `audit.hmac_key_file: cannot read ${k.file}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (key.length < 16) {
      throw toolgateError(
        "config_invalid",
        `audit.hmac_key_file: ${k.file} holds ${key.length} bytes; at least 16 are needed`,
      );
    }
  } else {
    key = randomBytes(32);
    log.warn(
      "no audit.hmac_key_file configured: keyed hashes use a random per-process key and correlate only within this run",
      { event: "audit.random_hmac_key" },
    );
  }
  // The key id names the key without revealing it.
  const keyId = createHash("sha256")
    .update("toolgate-key-id")
    .update(key)
    .digest("base64url")
    .slice(0, 8);
  return { key, keyId };
}
