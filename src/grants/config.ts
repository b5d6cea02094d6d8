/**
 * The `grants` section of the config schema: the credential every allow
 * carries (docs/grants.md), its signing keys (one key, or a rotation list) and
 * per-tool settings. Leaf-level: imports only the schema builder and
 * src/shared.
 */
import {
  bool,
  emptyRecord,
  int,
  list,
  map,
  path,
  section,
  text,
  type CheckContext,
  type Infer,
} from "../shared/config-spec";
import { GRANT_ALGORITHMS, isOneOf } from "../shared/algorithms";
import { isObject } from "../shared/guards";

const KID = /^[A-Za-z0-9._:-]{1,128}$/;
const KEY_MEMBERS = ["kid", "private_key_file", "public_key_file", "active", "alg"];
const TOOL_MEMBERS = ["audience", "ttl_seconds", "single_use"];

/** One entry of `grants.keys`; undefined when it is not a mapping. */
function keyEntry(k: unknown, where: string, { report, resolve }: CheckContext) {
  const fix = `Fix: each entry is {kid, private_key_file | public_key_file, active?, alg?}.`;
  if (!isObject(k)) {
    report(`key "${where}" must be a mapping. ${fix}`);
    return undefined;
  }
  const extra = Object.keys(k).find((m) => !KEY_MEMBERS.includes(m));
  if (extra !== undefined) report(`key "${where}.${extra}" is unknown. ${fix}`);
  const priv = k.private_key_file;
  const pub = k.public_key_file;
  if (
    (priv === undefined) === (pub === undefined) ||
    ![priv, pub].some((p) => typeof p === "string" && p !== "")
  )
    report(`key "${where}" needs exactly one of private_key_file, public_key_file. ${fix}`);
  if (typeof k.kid !== "string" || !KID.test(k.kid))
    report(`key "${where}.kid" must be a kid (1-128 of A-Z a-z 0-9 . _ : -). ${fix}`);
  if (k.active !== undefined && typeof k.active !== "boolean")
    report(`key "${where}.active" must be true or false. ${fix}`);
  if (k.active === true && priv === undefined)
    report(`key "${where}" is active but has no private_key_file. ${fix}`);
  if (k.alg !== undefined && !isOneOf(GRANT_ALGORITHMS, k.alg))
    report(`key "${where}.alg" must be one of ${GRANT_ALGORITHMS.join(", ")}. ${fix}`);
  return {
    kid: typeof k.kid === "string" ? k.kid : null,
    privateKeyFile: typeof priv === "string" ? resolve(priv) : null,
    publicKeyFile: typeof pub === "string" ? resolve(pub) : null,
    active: k.active === true,
    alg: isOneOf(GRANT_ALGORITHMS, k.alg) ? k.alg : null,
    /** The config key it came from, for messages. */
    where,
  };
}

type GrantKey = NonNullable<ReturnType<typeof keyEntry>>;

/** One entry of `grants.tools`; undefined when it is not a mapping. */
function toolEntry(t: unknown, where: string, { report }: CheckContext) {
  const fix = `Fix: {audience?: string, ttl_seconds?: 1-3600, single_use?: bool}.`;
  if (!isObject(t)) {
    report(`key "${where}" must be a mapping. ${fix}`);
    return undefined;
  }
  const extra = Object.keys(t).find((m) => !TOOL_MEMBERS.includes(m));
  if (extra !== undefined) report(`key "${where}.${extra}" is unknown. ${fix}`);
  const { audience, ttl_seconds: ttl, single_use: single } = t;
  const audienceOk = typeof audience === "string" && /^\S{1,512}$/.test(audience);
  if (audience !== undefined && !audienceOk)
    report(`key "${where}.audience" must be a non-empty string. ${fix}`);
  const ttlOk = typeof ttl === "number" && Number.isInteger(ttl) && ttl >= 1 && ttl <= 3600;
  if (ttl !== undefined && !ttlOk)
    report(`key "${where}.ttl_seconds" must be an integer from 1 to 3600. ${fix}`);
  if (single !== undefined && typeof single !== "boolean")
    report(`key "${where}.single_use" must be true or false. ${fix}`);
  return {
    ...(typeof audience === "string" && audienceOk ? { audience } : {}),
    ...(typeof ttl === "number" && ttlOk ? { ttlSeconds: ttl } : {}),
    ...(typeof single === "boolean" ? { singleUse: single } : {}),
  };
}

const KEYS = list({
  key: "grants.keys",
  env: "TOOLGATE_GRANTS_KEYS",
  hint: "a list of {kid, private_key_file | public_key_file, active?, alg?}",
  item: keyEntry,
  default: null,
  doc: "Key rotation (instead of `grants.private_key_file`): every key is published in the JWKS; exactly one entry with a private key is `active: true` and signs. `alg` may pick PS256 for an RSA key. Env: JSON.",
});

const TOOLS = map({
  key: "grants.tools",
  env: "TOOLGATE_GRANTS_TOOLS",
  hint: "a mapping tool name → {audience?, ttl_seconds?, single_use?}",
  item: toolEntry,
  default: null,
  doc: "Per tool: the grant's `aud` (default `tool:<tool name>`), lifetime and single use (default: true for execute and admin tools). Env: JSON.",
});

export const GRANTS = section(
  {
    enabled: bool({
      key: "grants.enabled",
      env: "TOOLGATE_GRANTS_ENABLED",
      default: true,
      doc: "Put a short-lived, request-bound grant (compact JWS) on every allow, for the tool backend to verify (docs/grants.md).",
    }),
    issuer: text({
      key: "grants.issuer",
      env: "TOOLGATE_GRANTS_ISSUER",
      pattern: /^\S{1,512}$/,
      hint: "the grants' `iss`",
      default: null,
      doc: "The grants' issuer (`iss`). Default: `toolgate:<agent.id>`.",
    }),
    ttlSeconds: int({
      key: "grants.ttl_seconds",
      env: "TOOLGATE_GRANTS_TTL_SECONDS",
      min: 1,
      max: 3600,
      default: 60,
      doc: "Lifetime of a grant (`exp - iat`) unless `grants.tools` sets one for the tool.",
    }),
    privateKeyFile: path({
      key: "grants.private_key_file",
      env: "TOOLGATE_GRANTS_PRIVATE_KEY_FILE",
      default: null,
      doc: "PEM private key (PKCS#8/SEC1) that signs grants: EC P-256 → ES256 (recommended), P-384 → ES384, RSA → RS256, Ed25519 → EdDSA. With neither this nor `grants.keys`, a key is generated at start (warned; backends must refetch the JWKS after a restart).",
    }),
    keyId: text({
      key: "grants.key_id",
      env: "TOOLGATE_GRANTS_KEY_ID",
      pattern: /^[A-Za-z0-9._:-]{1,128}$/,
      hint: "a kid",
      default: null,
      doc: "The `kid` of `grants.private_key_file`. Default: its RFC 7638 thumbprint.",
    }),
    keys: KEYS,
    tools: TOOLS,
    jwksPath: text({
      key: "grants.jwks_path",
      env: "TOOLGATE_GRANTS_JWKS_PATH",
      pattern: /^\/[A-Za-z0-9._~/-]{0,200}$/,
      hint: "a URL path",
      default: "/.well-known/jwks.json",
      doc: "Where the control port serves the grant keys (JWKS; public, no token needed).",
    }),
  },
  {
    check(v, ctx) {
      if (v.privateKeyFile !== null && v.keys !== null) {
        ctx.report(
          `keys "grants.private_key_file" and "grants.keys" are exclusive. Fix: list the key in grants.keys with active: true.`,
        );
      } else if (v.privateKeyFile === null && v.keys !== null && v.keys !== undefined) {
        if (KEYS.items(v.keys, ctx).filter((k) => k.active).length !== 1)
          ctx.report(`key "grants.keys" must have exactly one entry with active: true (it signs).`);
      }
      if (v.tools !== null && v.tools !== undefined) TOOLS.items(v.tools, ctx);
    },
    compile({ privateKeyFile, keyId, keys, tools, ...rest }) {
      const shorthand: GrantKey = {
        kid: keyId,
        privateKeyFile,
        publicKeyFile: null,
        active: true,
        alg: null,
        where: "grants.private_key_file",
      };
      return {
        ...rest,
        /** Every configured key (published); at most one `active` (signs). Empty: an ephemeral key. */
        keys: privateKeyFile !== null ? [shorthand] : (keys ?? []),
        // looked up by the caller's tool name: no prototype to read members from
        tools: tools ?? emptyRecord<NonNullable<typeof tools>[string]>(),
      };
    },
  },
);

/** The compiled `grants` section. */
export type GrantsSectionConfig = Infer<typeof GRANTS>;
