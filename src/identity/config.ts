/**
 * The `identity` section of the config schema, and the token-verification
 * keys it shares with the control port (`control.jwt`). Leaf-level: imports
 * only the schema builder and src/shared.
 */
import { int, oneOf, path, section, text, type Loose, type Infer } from "../shared/config-spec";
import { devPublicKeyPath } from "../shared/paths";

/** The token-verification keys of one port: `<prefix>.issuer`, `.audience`, the key source, … */
function tokenFields(prefix: string, envPrefix: string, audience: string, what: string) {
  return {
    issuer: text({
      key: `${prefix}.issuer`,
      env: `${envPrefix}_ISSUER`,
      pattern: /^\S{1,512}$/,
      hint: "the expected `iss`",
      default: "toolgate-dev",
      doc: `Expected token issuer (\`iss\`) on ${what}. The default is the development issuer.`,
    }),
    audience: text({
      key: `${prefix}.audience`,
      env: `${envPrefix}_AUDIENCE`,
      pattern: /^\S{1,512}$/,
      hint: "the expected `aud`",
      default: audience,
      doc: `Expected token audience (\`aud\`) on ${what}.`,
    }),
    publicKeyFile: path({
      key: `${prefix}.public_key_file`,
      env: `${envPrefix}_PUBLIC_KEY_FILE`,
      default: null,
      doc: `PEM public key (SPKI) that signs tokens for ${what}. Set one of this, \`jwks_file\` or \`jwks_url\`; with none, the development key in config/dev/ (development only).`,
    }),
    jwksFile: path({
      key: `${prefix}.jwks_file`,
      env: `${envPrefix}_JWKS_FILE`,
      default: null,
      doc: `A JWKS file with the keys that sign tokens for ${what}.`,
    }),
    jwksUrl: text({
      key: `${prefix}.jwks_url`,
      env: `${envPrefix}_JWKS_URL`,
      pattern: /^https?:\/\/\S+$/,
      hint: "an http(s) URL",
      default: null,
      doc: `A JWKS URL with the keys that sign tokens for ${what} (fetched and cached).`,
    }),
    rolesClaim: text({
      key: `${prefix}.roles_claim`,
      env: `${envPrefix}_ROLES_CLAIM`,
      pattern: /^[A-Za-z0-9_:./-]{1,128}$/,
      hint: "a claim name",
      default: "roles",
      doc: `The claim holding the caller's roles (an array of strings) on ${what}.`,
    }),
    clockSkewSeconds: int({
      key: `${prefix}.clock_skew_seconds`,
      env: `${envPrefix}_CLOCK_SKEW_SECONDS`,
      min: 0,
      max: 600,
      default: 30,
      doc: `Clock skew tolerated for \`exp\`/\`nbf\` on ${what}.`,
    }),
  };
}

type KeySource = Pick<
  Loose<ReturnType<typeof tokenFields>>,
  "publicKeyFile" | "jwksFile" | "jwksUrl"
>;

/**
 * Whether a port's tokens are verified with the committed development key (no
 * key configured, or the dev key's own file); undefined when more than one key
 * source is set (reported by the section's check).
 */
export function usesDevKey(v: KeySource): boolean | undefined {
  const set = [v.publicKeyFile, v.jwksFile, v.jwksUrl].filter((k) => k !== null);
  if (set.length > 1) return undefined;
  return set.length === 0 || v.publicKeyFile === devPublicKeyPath();
}

/** How tokens are verified on one port: `<prefix>.*`, compiled to the key source and whether it is the dev key. */
export function tokenSpec(prefix: string, envPrefix: string, audience: string, what: string) {
  return section(tokenFields(prefix, envPrefix, audience, what), {
    check(v, { report }) {
      if (usesDevKey(v) === undefined) {
        report(
          `keys "${prefix}.public_key_file", "${prefix}.jwks_file" and "${prefix}.jwks_url" are exclusive. Fix: set only one.`,
        );
      }
    },
    compile({ publicKeyFile, jwksFile, jwksUrl, ...rest }) {
      const keys =
        publicKeyFile !== null
          ? keySource("public_key_file", publicKeyFile)
          : jwksFile !== null
            ? keySource("jwks_file", jwksFile)
            : jwksUrl !== null
              ? keySource("jwks_url", jwksUrl)
              : keySource("public_key_file", devPublicKeyPath());
      return {
        ...rest,
        keys,
        /** True while the keys are the committed development key (config/dev/). */
        dev: keys.kind === "public_key_file" && keys.value === devPublicKeyPath(),
      };
    },
  });
}

function keySource<K extends "public_key_file" | "jwks_file" | "jwks_url">(kind: K, value: string) {
  return { kind, value };
}

export const IDENTITY = section(
  {
    mode: oneOf(["trusted", "jwt"], {
      key: "identity.mode",
      env: "TOOLGATE_IDENTITY_MODE",
      default: "trusted",
      doc: "How the subject is established. `jwt`: the user's token in `Authorization: Bearer …`, verified (signature, issuer, audience, expiry); `subject.id` must equal its `sub`. `trusted`: the caller's subject.id is taken as given (development; loopback only, warned at start).",
    }),
    jwt: tokenSpec(
      "identity.jwt",
      "TOOLGATE_IDENTITY_JWT",
      "toolgate-agent",
      "the agent port (identity.mode jwt)",
    ),
    jobClaim: text({
      key: "identity.jwt.job_claim",
      env: "TOOLGATE_IDENTITY_JWT_JOB_CLAIM",
      pattern: /^[A-Za-z0-9_:./-]{1,128}$/,
      hint: "a claim name",
      default: null,
      doc: "identity.mode jwt: the token claim naming the job the caller may work on (e.g. `job`). When set, every decision needs a token carrying it, `context.job.id` must equal it (else 403 `job_mismatch`), and the policy sees it as `verified.job.id`: job-scoped kill switches, limits and budgets then hold even against an agent that lies about its job. Unset: the job is as the caller sends it (it scopes only a cooperating agent).",
    }),
    sessionClaim: text({
      key: "identity.jwt.session_claim",
      env: "TOOLGATE_IDENTITY_JWT_SESSION_CLAIM",
      pattern: /^[A-Za-z0-9_:./-]{1,128}$/,
      hint: "a claim name",
      default: "sid",
      doc: "identity.mode jwt: the token claim naming the session (OpenID Connect's `sid`). When the token carries it, it is the session whose history the policy sees (`verified.session`), whatever `context.session.id` says; without it the body's `context.session.id` is used (docs/sessions.md).",
    }),
  },
  {
    // The claims naming the caller's job and session are read from the agent port's tokens.
    compile: ({ jwt, jobClaim, sessionClaim, ...rest }) => ({
      ...rest,
      jwt: { ...jwt, jobClaim, sessionClaim },
    }),
  },
);

/** How tokens are verified on one port (the compiled `identity.jwt`, and `control.jwt`). */
export type JwtConfig = Omit<Infer<typeof IDENTITY>["jwt"], "sessionClaim"> & {
  /** Null on ports whose tokens name no session (control, fleet). */
  sessionClaim?: string | null;
};
