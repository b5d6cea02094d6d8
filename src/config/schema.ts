/**
 * The one configuration schema. Each field names its key in the config file,
 * its environment override, its default and what it means; the validator, the
 * env loader and docs/configuration.md (kept in step by a test) all read this
 * table.
 */
import { BUNDLE_SIGNING_ALGORITHMS } from "../shared/algorithms";

export type FieldType =
  | { kind: "string"; pattern?: RegExp; patternHint?: string }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "int"; min: number; max: number }
  | { kind: "bool" }
  | { kind: "path" }
  | { kind: "host" }
  /** Structured value (YAML list/mapping; env: JSON text), checked when the config is compiled. */
  | { kind: "list" | "map"; hint: string };

export interface FieldSpec {
  key: string;
  env: string;
  type: FieldType;
  default: string | number | boolean | null;
  doc: string;
  /** Never echoed in messages or logs. */
  secret?: boolean;
}

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

/** The token-verification keys shared by the agent port (jwt mode) and the control port. */
function jwtFields(prefix: string, envPrefix: string, audience: string, what: string): FieldSpec[] {
  return [
    {
      key: `${prefix}.issuer`,
      env: `${envPrefix}_ISSUER`,
      type: { kind: "string", pattern: /^\S{1,512}$/, patternHint: "the expected `iss`" },
      default: "toolgate-dev",
      doc: `Expected token issuer (\`iss\`) on ${what}. The default is the development issuer.`,
    },
    {
      key: `${prefix}.audience`,
      env: `${envPrefix}_AUDIENCE`,
      type: { kind: "string", pattern: /^\S{1,512}$/, patternHint: "the expected `aud`" },
      default: audience,
      doc: `Expected token audience (\`aud\`) on ${what}.`,
    },
    {
      key: `${prefix}.public_key_file`,
      env: `${envPrefix}_PUBLIC_KEY_FILE`,
      type: { kind: "path" },
      default: null,
      doc: `PEM public key (SPKI) that signs tokens for ${what}. Set one of this, \`jwks_file\` or \`jwks_url\`; with none, the development key in config/dev/ (development only).`,
    },
    {
      key: `${prefix}.jwks_file`,
      env: `${envPrefix}_JWKS_FILE`,
      type: { kind: "path" },
      default: null,
      doc: `A JWKS file with the keys that sign tokens for ${what}.`,
    },
    {
      key: `${prefix}.jwks_url`,
      env: `${envPrefix}_JWKS_URL`,
      type: { kind: "string", pattern: /^https?:\/\/\S+$/, patternHint: "an http(s) URL" },
      default: null,
      doc: `A JWKS URL with the keys that sign tokens for ${what} (fetched and cached).`,
    },
    {
      key: `${prefix}.roles_claim`,
      env: `${envPrefix}_ROLES_CLAIM`,
      type: { kind: "string", pattern: /^[A-Za-z0-9_:./-]{1,128}$/, patternHint: "a claim name" },
      default: "roles",
      doc: `The claim holding the caller's roles (an array of strings) on ${what}.`,
    },
    {
      key: `${prefix}.clock_skew_seconds`,
      env: `${envPrefix}_CLOCK_SKEW_SECONDS`,
      type: { kind: "int", min: 0, max: 600 },
      default: 30,
      doc: `Clock skew tolerated for \`exp\`/\`nbf\` on ${what}.`,
    },
  ];
}

export const FIELDS: readonly FieldSpec[] = [
  {
    key: "agent.id",
    env: "TOOLGATE_AGENT_ID",
    type: { kind: "string", pattern: ID_PATTERN, patternHint: "1-128 of A-Z a-z 0-9 . _ : @ -" },
    default: "support-triage",
    doc: "The agent this sidecar serves (one sidecar per agent). A request naming another agent is refused.",
  },
  {
    key: "server.agent.host",
    env: "TOOLGATE_AGENT_HOST",
    type: { kind: "host" },
    default: "127.0.0.1",
    doc: "Listen address of the agent port. Keep it on loopback: the agent runs in the same pod.",
  },
  {
    key: "server.agent.port",
    env: "TOOLGATE_AGENT_PORT",
    type: { kind: "int", min: 0, max: 65535 },
    default: 8181,
    doc: "Port of the agent-facing API (decisions, AuthZEN, OPA Data API, health). 0 picks a free port.",
  },
  {
    key: "server.limits.body_bytes",
    env: "TOOLGATE_LIMIT_BODY_BYTES",
    type: { kind: "int", min: 1024, max: 64 * 1024 * 1024 },
    default: 1024 * 1024,
    doc: "Largest request body accepted, in bytes; larger bodies get 413 body_too_large.",
  },
  {
    key: "server.limits.max_depth",
    env: "TOOLGATE_LIMIT_MAX_DEPTH",
    type: { kind: "int", min: 4, max: 512 },
    default: 32,
    doc: "Deepest JSON nesting accepted in a request body; deeper bodies get 400 nesting_too_deep.",
  },
  {
    key: "server.limits.max_evaluations",
    env: "TOOLGATE_LIMIT_MAX_EVALUATIONS",
    type: { kind: "int", min: 1, max: 10000 },
    default: 256,
    doc: "Most items accepted in one AuthZEN /access/v1/evaluations request.",
  },
  {
    key: "server.request_timeout_ms",
    env: "TOOLGATE_REQUEST_TIMEOUT_MS",
    type: { kind: "int", min: 100, max: 600000 },
    default: 10000,
    doc: "A request whose body has not arrived in full by then is answered 408 and closed.",
  },
  {
    key: "policy.bundle",
    env: "TOOLGATE_BUNDLE",
    type: { kind: "path" },
    default: null,
    doc: "Path of the policy bundle (.tar.gz built by `opa build -t wasm`, or a directory). Default: the embedded support-triage bundle.",
  },
  {
    key: "policy.entrypoint",
    env: "TOOLGATE_ENTRYPOINT",
    type: {
      kind: "string",
      pattern: /^[A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*$/,
      patternHint: "a wasm entrypoint such as toolgate/decision",
    },
    default: "toolgate/decision",
    doc: "The wasm entrypoint that returns toolgate's decision document (see docs/policy-contract.md).",
  },
  // -- containment: candidate policy in shadow (docs/containment.md)
  {
    key: "policy.candidate.bundle",
    env: "TOOLGATE_CANDIDATE_BUNDLE",
    type: { kind: "path" },
    default: null,
    doc: "A second bundle (file or directory) evaluated beside the active one on every decision, for the record only: its answer goes to the span (`toolgate.candidate.outcome`), the trail and, when it differs, a `candidate.divergence` log line and `toolgate_candidate_divergences_total`. Never changes an answer. Loaded once at start; a bundle that fails to load is logged and skipped.",
  },
  // -- live policy: bundle sources, polling, signatures, last-known-good (docs/live-policy.md)
  {
    key: "policy.source",
    env: "TOOLGATE_POLICY_SOURCE",
    type: { kind: "enum", values: ["file", "http", "oci"] },
    default: "file",
    doc: "Where the bundle comes from: `file` (`policy.bundle`, reloaded when it changes), `http` (`policy.http.url`, polled) or `oci` (`policy.oci.reference`, polled).",
  },
  {
    key: "policy.file.watch_interval_ms",
    env: "TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS",
    type: { kind: "int", min: 0, max: 3_600_000 },
    default: 1000,
    doc: "How often a `file` bundle is checked for changes (size, mtime); a change is reloaded once it has been stable for 250 ms. 0: never reload. The embedded bundle is not watched.",
  },
  {
    key: "policy.http.url",
    env: "TOOLGATE_POLICY_HTTP_URL",
    type: { kind: "string", pattern: /^https?:\/\/\S+$/, patternHint: "an http(s) URL" },
    default: null,
    doc: "The bundle's URL (`policy.source: http`), polled with `If-None-Match`. Credentials belong in `policy.http.bearer_token_file`, not in the URL.",
  },
  {
    key: "policy.oci.reference",
    env: "TOOLGATE_POLICY_OCI_REFERENCE",
    type: {
      kind: "string",
      pattern:
        /^[A-Za-z0-9.-]+(:\d+)?\/[a-z0-9._/-]+(:[A-Za-z0-9_.-]{1,128}|@sha256:[a-f0-9]{64})$/,
      patternHint: "registry/repository:tag or registry/repository@sha256:…",
    },
    default: null,
    doc: "The bundle's OCI reference (`policy.source: oci`): an image whose layer of media type `application/vnd.oci.image.layer.v1.tar+gzip` is the bundle, as OPA's OCI downloader reads it.",
  },
  {
    key: "policy.oci.plain_http",
    env: "TOOLGATE_POLICY_OCI_PLAIN_HTTP",
    type: { kind: "bool" },
    default: false,
    doc: "Talk to the OCI registry over plain HTTP (a loopback or test registry only).",
  },
  {
    key: "policy.http.min_delay_seconds",
    env: "TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS",
    type: { kind: "int", min: 1, max: 86400 },
    default: 60,
    doc: "Polling (http and oci): the next poll waits a random delay between the min and the max (OPA's `polling.min_delay_seconds`).",
  },
  {
    key: "policy.http.max_delay_seconds",
    env: "TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS",
    type: { kind: "int", min: 1, max: 86400 },
    default: 120,
    doc: "Polling (http and oci): the upper bound of the random delay, and of the exponential backoff (with jitter) after failures.",
  },
  {
    key: "policy.http.bearer_token_file",
    env: "TOOLGATE_POLICY_HTTP_BEARER_TOKEN_FILE",
    type: { kind: "path" },
    default: null,
    doc: "File holding a token sent as `Authorization: Bearer …` to the bundle server or registry; re-read on every poll (rotation). Never logged.",
  },
  {
    key: "policy.http.ca_file",
    env: "TOOLGATE_POLICY_HTTP_CA_FILE",
    type: { kind: "path" },
    default: null,
    doc: "PEM CA certificate(s) trusted for the bundle server's TLS certificate (instead of the system's). TLS is always verified.",
  },
  {
    key: "policy.http.max_bytes",
    env: "TOOLGATE_POLICY_HTTP_MAX_BYTES",
    type: { kind: "int", min: 1024, max: 1024 * 1024 * 1024 },
    default: 32 * 1024 * 1024,
    doc: "Largest bundle download accepted, in bytes; the download is aborted past it (`bundle_too_large`).",
  },
  {
    key: "policy.http.timeout_ms",
    env: "TOOLGATE_POLICY_HTTP_TIMEOUT_MS",
    type: { kind: "int", min: 100, max: 600_000 },
    default: 10_000,
    doc: "A bundle request (headers and body) that takes longer is aborted and counted as a failure.",
  },
  {
    key: "policy.persist_dir",
    env: "TOOLGATE_POLICY_PERSIST_DIR",
    type: { kind: "path" },
    default: null,
    doc: "Where the last activated http/oci bundle is kept (written atomically) to be activated at boot when the source is unreachable. Default: `<state.dir>/bundles`.",
  },
  {
    key: "policy.signing.keys_file",
    env: "TOOLGATE_POLICY_SIGNING_KEYS_FILE",
    type: { kind: "path" },
    default: null,
    doc: 'JSON map of verification keys, as OPA\'s `keys`: `{"<key id>": {"algorithm": "RS256", "key": "<PEM public key or HMAC secret>", "scope": "…"}}`. Setting it (or `public_key_file`) turns signature verification on: unsigned bundles are refused.',
  },
  {
    key: "policy.signing.public_key_file",
    env: "TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE",
    type: { kind: "path" },
    default: null,
    doc: "One verification key: a PEM public key (RS*, PS*, ES*) or a file holding the HMAC secret (HS*), known as `policy.signing.key_id`. Exclusive with `keys_file`.",
  },
  {
    key: "policy.signing.key_id",
    env: "TOOLGATE_POLICY_SIGNING_KEY_ID",
    type: { kind: "string", pattern: /^\S{1,256}$/, patternHint: "a key id" },
    default: null,
    doc: "The key that must verify every bundle (OPA's `signing.keyid`). Unset: the token's `kid` header (then its `keyid` claim) picks a key from `keys_file`; with `public_key_file` the id is `default`.",
  },
  {
    key: "policy.signing.algorithm",
    env: "TOOLGATE_POLICY_SIGNING_ALGORITHM",
    type: {
      kind: "enum",
      values: BUNDLE_SIGNING_ALGORITHMS,
    },
    default: "RS256",
    doc: "Algorithm of `policy.signing.public_key_file` (a `keys_file` names one per key).",
  },
  {
    key: "policy.signing.scope",
    env: "TOOLGATE_POLICY_SIGNING_SCOPE",
    type: { kind: "string", pattern: /^.{1,256}$/, patternHint: "a scope" },
    default: null,
    doc: "The `scope` claim a bundle's signature must carry (OPA's `signing.scope`); unset: the key's scope, else none.",
  },
  {
    key: "identity.mode",
    env: "TOOLGATE_IDENTITY_MODE",
    type: { kind: "enum", values: ["trusted", "jwt"] },
    default: "trusted",
    doc: "How the subject is established. `jwt`: the user's token in `Authorization: Bearer …`, verified (signature, issuer, audience, expiry); `subject.id` must equal its `sub`. `trusted`: the caller's subject.id is taken as given (development; loopback only, warned at start).",
  },
  ...jwtFields(
    "identity.jwt",
    "TOOLGATE_IDENTITY_JWT",
    "toolgate-agent",
    "the agent port (identity.mode jwt)",
  ),
  {
    key: "identity.jwt.job_claim",
    env: "TOOLGATE_IDENTITY_JWT_JOB_CLAIM",
    type: { kind: "string", pattern: /^[A-Za-z0-9_:./-]{1,128}$/, patternHint: "a claim name" },
    default: null,
    doc: "identity.mode jwt: the token claim naming the job the caller may work on (e.g. `job`). When set, every decision needs a token carrying it, `context.job.id` must equal it (else 403 `job_mismatch`), and the policy sees it as `verified.job.id`: job-scoped kill switches, limits and budgets then hold even against an agent that lies about its job. Unset: the job is as the caller sends it (it scopes only a cooperating agent).",
  },
  {
    key: "control.enabled",
    env: "TOOLGATE_CONTROL_ENABLED",
    type: { kind: "bool" },
    default: true,
    doc: "Run the control port (approvals, administration). Every route but health needs a verified bearer token.",
  },
  {
    key: "control.host",
    env: "TOOLGATE_CONTROL_HOST",
    type: { kind: "host" },
    default: "127.0.0.1",
    doc: "Listen address of the control port. Expose it (0.0.0.0 in a pod) only behind a NetworkPolicy.",
  },
  {
    key: "control.port",
    env: "TOOLGATE_CONTROL_PORT",
    type: { kind: "int", min: 0, max: 65535 },
    default: 8182,
    doc: "Port of the control API. 0 picks a free port.",
  },
  ...jwtFields("control.jwt", "TOOLGATE_CONTROL_JWT", "toolgate-control", "the control port"),
  {
    key: "control.metrics_auth",
    env: "TOOLGATE_CONTROL_METRICS_AUTH",
    type: { kind: "bool" },
    default: false,
    doc: "Require a verified control-port token for `GET /metrics` (metrics hold no secrets, so the default is open).",
  },
  {
    key: "control.admin_role",
    env: "TOOLGATE_CONTROL_ADMIN_ROLE",
    type: { kind: "string", pattern: ID_PATTERN, patternHint: "a role name" },
    default: "admin",
    doc: "The token role that may use administrative routes.",
  },
  {
    key: "approvals.webhook.url",
    env: "TOOLGATE_APPROVALS_WEBHOOK_URL",
    type: { kind: "string", pattern: /^https?:\/\/\S+$/, patternHint: "an http(s) URL" },
    default: null,
    doc: "If set, every new pending approval task is POSTed here (JSON, HMAC-signed with the secret below; retried with backoff).",
  },
  {
    key: "approvals.webhook.secret",
    env: "TOOLGATE_APPROVALS_WEBHOOK_SECRET",
    type: { kind: "string", pattern: /^.{16,}$/s, patternHint: "at least 16 characters" },
    default: null,
    doc: "Key for the webhook's `X-Toolgate-Signature: sha256=<hex HMAC of the body>`. Required with the URL. Never logged.",
    secret: true,
  },
  {
    key: "approvals.request_ttl_seconds",
    env: "TOOLGATE_APPROVAL_REQUEST_TTL_SECONDS",
    type: { kind: "int", min: 10, max: 7 * 24 * 3600 },
    default: 900,
    doc: "How long a needs_approval answer may be turned into an access request (its `expires_at`).",
  },
  {
    key: "approvals.request_limit.max",
    env: "TOOLGATE_APPROVAL_REQUEST_LIMIT_MAX",
    type: { kind: "int", min: 1, max: 100_000 },
    default: 20,
    doc: "Access requests per initiator that are not approved (pending, denied, cancelled, expired) allowed within `approvals.request_limit.window_seconds`; one more is 429 `access_request_rate_limited`.",
  },
  {
    key: "approvals.request_limit.window_seconds",
    env: "TOOLGATE_APPROVAL_REQUEST_LIMIT_WINDOW_SECONDS",
    type: { kind: "int", min: 1, max: 7 * 24 * 3600 },
    default: 3600,
    doc: "The sliding window of `approvals.request_limit.max`, in seconds.",
  },
  // -- containment: budget reservations (docs/containment.md) ------------------
  {
    key: "containment.reservation_ttl_seconds",
    env: "TOOLGATE_RESERVATION_TTL_SECONDS",
    type: { kind: "int", min: 1, max: 7 * 24 * 3600 },
    default: null,
    doc: "How long a budget reservation (made by each allow of a budgeted tool) waits for the action report of its decision: until then an ok report commits it and an error report releases it; after, it counts as spent, never released. Default: the tool's grant lifetime (`grants.tools`, else `grants.ttl_seconds`) + 300 s.",
  },
  {
    key: "containment.reservation_fsync",
    env: "TOOLGATE_RESERVATION_FSYNC",
    type: { kind: "bool" },
    default: true,
    doc: "Fsync each budget reservation before its allow is answered (it then survives power loss). False: no fsync (`synchronous=NORMAL`): it survives a crash or restart of toolgate, but a power loss or OS crash may lose the reservations made since the last fsync of containment.db, reopening their budgets.",
  },
  // -- grants: the credential every allow carries (docs/grants.md) -------------
  {
    key: "grants.enabled",
    env: "TOOLGATE_GRANTS_ENABLED",
    type: { kind: "bool" },
    default: true,
    doc: "Put a short-lived, request-bound grant (compact JWS) on every allow, for the tool backend to verify (docs/grants.md).",
  },
  {
    key: "grants.issuer",
    env: "TOOLGATE_GRANTS_ISSUER",
    type: { kind: "string", pattern: /^\S{1,512}$/, patternHint: "the grants' `iss`" },
    default: null,
    doc: "The grants' issuer (`iss`). Default: `toolgate:<agent.id>`.",
  },
  {
    key: "grants.ttl_seconds",
    env: "TOOLGATE_GRANTS_TTL_SECONDS",
    type: { kind: "int", min: 1, max: 3600 },
    default: 60,
    doc: "Lifetime of a grant (`exp - iat`) unless `grants.tools` sets one for the tool.",
  },
  {
    key: "grants.private_key_file",
    env: "TOOLGATE_GRANTS_PRIVATE_KEY_FILE",
    type: { kind: "path" },
    default: null,
    doc: "PEM private key (PKCS#8/SEC1) that signs grants: EC P-256 → ES256 (recommended), P-384 → ES384, RSA → RS256, Ed25519 → EdDSA. With neither this nor `grants.keys`, a key is generated at start (warned; backends must refetch the JWKS after a restart).",
  },
  {
    key: "grants.key_id",
    env: "TOOLGATE_GRANTS_KEY_ID",
    type: { kind: "string", pattern: /^[A-Za-z0-9._:-]{1,128}$/, patternHint: "a kid" },
    default: null,
    doc: "The `kid` of `grants.private_key_file`. Default: its RFC 7638 thumbprint.",
  },
  {
    key: "grants.keys",
    env: "TOOLGATE_GRANTS_KEYS",
    type: {
      kind: "list",
      hint: "a list of {kid, private_key_file | public_key_file, active?, alg?}",
    },
    default: null,
    doc: "Key rotation (instead of `grants.private_key_file`): every key is published in the JWKS; exactly one entry with a private key is `active: true` and signs. `alg` may pick PS256 for an RSA key. Env: JSON.",
  },
  {
    key: "grants.tools",
    env: "TOOLGATE_GRANTS_TOOLS",
    type: { kind: "map", hint: "a mapping tool name → {audience?, ttl_seconds?, single_use?}" },
    default: null,
    doc: "Per tool: the grant's `aud` (default `tool:<tool name>`), lifetime and single use (default: true for execute and admin tools). Env: JSON.",
  },
  {
    key: "grants.jwks_path",
    env: "TOOLGATE_GRANTS_JWKS_PATH",
    type: { kind: "string", pattern: /^\/[A-Za-z0-9._~/-]{0,200}$/, patternHint: "a URL path" },
    default: "/.well-known/jwks.json",
    doc: "Where the control port serves the grant keys (JWKS; public, no token needed).",
  },
  {
    key: "state.dir",
    env: "TOOLGATE_STATE_DIR",
    type: { kind: "path" },
    default: ".toolgate",
    doc: "Directory for toolgate's own state (the audit trail by default). Relative to the config file, or the working directory.",
  },
  {
    key: "audit.trail.enabled",
    env: "TOOLGATE_AUDIT_TRAIL_ENABLED",
    type: { kind: "bool" },
    default: true,
    doc: "Write the tamper-evident local audit trail (JSON Lines, hash-chained). See docs/audit.md.",
  },
  {
    key: "audit.trail.dir",
    env: "TOOLGATE_AUDIT_TRAIL_DIR",
    type: { kind: "path" },
    default: null,
    doc: "Directory of the audit trail files. Default: `<state.dir>/audit`.",
  },
  {
    key: "audit.trail.max_file_bytes",
    env: "TOOLGATE_AUDIT_TRAIL_MAX_FILE_BYTES",
    type: { kind: "int", min: 4096, max: 1024 * 1024 * 1024 },
    default: 64 * 1024 * 1024,
    doc: "Rotate the trail file when it would exceed this size; the hash chain continues in the next file.",
  },
  {
    key: "audit.redaction",
    env: "TOOLGATE_AUDIT_REDACTION",
    type: { kind: "enum", values: ["hash", "erase"] },
    default: "hash",
    doc: "What default redaction does to a secret: `hash` (keyed HMAC-SHA256, correlatable) or `erase`.",
  },
  {
    key: "audit.hmac_key_file",
    env: "TOOLGATE_AUDIT_HMAC_KEY_FILE",
    type: { kind: "path" },
    default: null,
    doc: "File holding the key for keyed hashing (at least 16 bytes). Without it (and without TOOLGATE_AUDIT_HMAC_KEY) a random key is made per process, so hashes correlate only within one run.",
  },
  {
    key: "audit.hmac_key",
    env: "TOOLGATE_AUDIT_HMAC_KEY",
    type: { kind: "string", pattern: /^.{16,}$/s, patternHint: "at least 16 characters" },
    default: null,
    doc: "The keyed-hashing key itself (prefer the file, or a Secret-mounted env var). Never logged.",
    secret: true,
  },
  {
    key: "audit.log_decisions",
    env: "TOOLGATE_AUDIT_LOG_DECISIONS",
    type: { kind: "bool" },
    default: true,
    doc: "Write one JSON log line per decision and per action report (stdout, level info).",
  },
  {
    key: "audit.worker",
    env: "TOOLGATE_AUDIT_WORKER",
    type: { kind: "bool" },
    default: true,
    doc: "Do the audit work (redaction, spans and their export, the trail, decision log lines) on a worker thread, off the decision path. false: on the main thread, as an embedding or a one-core budget may prefer.",
  },
  {
    key: "tracing.max_queue_size",
    env: "TOOLGATE_TRACING_MAX_QUEUE_SIZE",
    type: { kind: "int", min: 16, max: 1_000_000 },
    default: 8192,
    doc: "Spans waiting for export; beyond this they are dropped and counted (decisions never wait for the collector). Other tracing settings are the standard OTEL_* variables.",
  },
  {
    key: "tracing.scheduled_delay_ms",
    env: "TOOLGATE_TRACING_SCHEDULED_DELAY_MS",
    type: { kind: "int", min: 10, max: 60_000 },
    default: 500,
    doc: "How often queued spans are exported.",
  },
  {
    key: "log.level",
    env: "TOOLGATE_LOG_LEVEL",
    type: { kind: "enum", values: ["error", "warn", "info", "debug", "silent"] },
    default: "info",
    doc: "Least severity written to the log (stderr, JSON lines).",
  },
];
