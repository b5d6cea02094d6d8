/**
 * The one configuration schema. Each field names its key in the config file,
 * its environment override, its default and what it means; the validator, the
 * env loader and docs/configuration.md (kept in step by a test) all read it,
 * and the compiled config's type is derived from it. The features' sections
 * live beside them (identity, bundles, approvals, containment, grants); the
 * rest, and the rules across sections, are here.
 */
import { resolve } from "node:path";
import { APPROVALS } from "../approvals/config";
import { POLICY } from "../bundles/config";
import { CONSOLE } from "../console/config";
import { CONTAINMENT } from "../containment/config";
import { SESSION } from "../session/config";
import { FLEET } from "../fleet/config";
import { GRANTS } from "../grants/config";
import { IDENTITY, tokenSpec, usesDevKey } from "../identity/config";
import {
  bool,
  fieldsOf,
  host,
  int,
  offLoopback,
  oneOf,
  path,
  section,
  text,
  type FieldSpec,
  type Infer,
} from "../shared/config-spec";

export type { FieldSpec, FieldType } from "../shared/config-spec";

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

const AGENT = {
  id: text({
    key: "agent.id",
    env: "TOOLGATE_AGENT_ID",
    pattern: ID_PATTERN,
    hint: "1-128 of A-Z a-z 0-9 . _ : @ -",
    default: "support-triage",
    doc: "The agent this sidecar serves (one sidecar per agent). A request naming another agent is refused.",
  }),
};

const SERVER = {
  agent: section(
    {
      host: host({
        key: "server.agent.host",
        env: "TOOLGATE_AGENT_HOST",
        default: "127.0.0.1",
        doc: "Listen address of the agent port. Keep it on loopback: the agent runs in the same pod.",
      }),
      port: int({
        key: "server.agent.port",
        env: "TOOLGATE_AGENT_PORT",
        min: 0,
        max: 65535,
        default: 8181,
        doc: "Port of the agent-facing API (decisions, AuthZEN, OPA Data API, health). 0 picks a free port.",
      }),
      socket: path({
        key: "server.agent.socket",
        env: "TOOLGATE_AGENT_SOCKET",
        default: null,
        doc:
          "A Unix domain socket the agent port also listens on, beside TCP (the same routes; health probes keep using TCP). " +
          "Its directory is created (0750) when only it is missing; it must belong to toolgate's user or root and must not be writable by everyone without the sticky bit. A stale socket there is replaced, any other file is refused. " +
          "In Kubernetes: a volume shared by the agent and the sidecar (docs/deploy.md).",
      }),
      socketMode: text({
        key: "server.agent.socket_mode",
        env: "TOOLGATE_AGENT_SOCKET_MODE",
        pattern: /^0?[0-7]{3}$/,
        hint: "an octal file mode such as 0660",
        default: "0660",
        doc: "File mode of `server.agent.socket`: who may connect (write permission). 0660: toolgate's user and group. Modes that let others write are refused.",
      }),
    },
    {
      check({ socket, socketMode }, { report, resolve: at }) {
        if (typeof socketMode === "string" && (parseInt(socketMode, 8) & 0o002) !== 0) {
          report(
            `key "server.agent.socket_mode" is ${JSON.stringify(socketMode)}: every local user could connect to the agent port. ` +
              `Fix: use 0660 (toolgate's user and group) or 0600.`,
          );
        }
        if (typeof socket === "string" && Buffer.byteLength(at(socket)) > 107) {
          report(
            `key "server.agent.socket" is ${JSON.stringify(socket)}: a Unix socket path may have at most 107 bytes, it has ${Buffer.byteLength(at(socket))}. ` +
              `Fix: choose a shorter path (e.g. /var/run/toolgate/agent.sock).`,
          );
        }
      },
      compile: ({ socketMode, ...v }) => ({ ...v, socketMode: parseInt(socketMode, 8) }),
    },
  ),
  limits: {
    bodyBytes: int({
      key: "server.limits.body_bytes",
      env: "TOOLGATE_LIMIT_BODY_BYTES",
      min: 1024,
      max: 64 * 1024 * 1024,
      default: 1024 * 1024,
      doc: "Largest request body accepted, in bytes; larger bodies get 413 body_too_large.",
    }),
    maxDepth: int({
      key: "server.limits.max_depth",
      env: "TOOLGATE_LIMIT_MAX_DEPTH",
      min: 4,
      max: 512,
      default: 32,
      doc: "Deepest JSON nesting accepted in a request body; deeper bodies get 400 nesting_too_deep.",
    }),
    maxEvaluations: int({
      key: "server.limits.max_evaluations",
      env: "TOOLGATE_LIMIT_MAX_EVALUATIONS",
      min: 1,
      max: 10000,
      default: 256,
      doc: "Most items accepted in one AuthZEN /access/v1/evaluations request.",
    }),
  },
  requestTimeoutMs: int({
    key: "server.request_timeout_ms",
    env: "TOOLGATE_REQUEST_TIMEOUT_MS",
    min: 100,
    max: 600000,
    default: 10000,
    doc: "A request whose body has not arrived in full by then is answered 408 and closed.",
  }),
  idleMemoryReleaseSeconds: int({
    key: "server.idle_memory_release_seconds",
    env: "TOOLGATE_SERVER_IDLE_MEMORY_RELEASE_SECONDS",
    min: 0,
    max: 3600,
    default: 30,
    doc: "Once the sidecar has been idle this long after activity (under 2 % of a core over the whole time, after at least 1 s of CPU time since the last release), `toolgate serve` runs one memory-reducing garbage collection on the main thread and the audit worker, so the memory load grew goes back to the OS; once per idle period. 0 turns it off.",
  }),
};

const CONTROL = section(
  {
    enabled: bool({
      key: "control.enabled",
      env: "TOOLGATE_CONTROL_ENABLED",
      default: true,
      doc: "Run the control port (approvals, administration). Every route but health needs a verified bearer token.",
    }),
    host: host({
      key: "control.host",
      env: "TOOLGATE_CONTROL_HOST",
      default: "127.0.0.1",
      doc: "Listen address of the control port. Expose it (0.0.0.0 in a pod) only behind a NetworkPolicy.",
    }),
    port: int({
      key: "control.port",
      env: "TOOLGATE_CONTROL_PORT",
      min: 0,
      max: 65535,
      default: 8182,
      doc: "Port of the control API. 0 picks a free port.",
    }),
    jwt: tokenSpec("control.jwt", "TOOLGATE_CONTROL_JWT", "toolgate-control", "the control port"),
    metricsAuth: bool({
      key: "control.metrics_auth",
      env: "TOOLGATE_CONTROL_METRICS_AUTH",
      default: false,
      doc: "Require a verified control-port token for `GET /metrics` (metrics hold no secrets, so the default is open).",
    }),
    adminRole: text({
      key: "control.admin_role",
      env: "TOOLGATE_CONTROL_ADMIN_ROLE",
      pattern: ID_PATTERN,
      hint: "a role name",
      default: "admin",
      doc: "The token role that may use administrative routes.",
    }),
  },
  {
    check(v, { report }) {
      // The development key is public: never trust it on a port others can reach.
      if (v.enabled === true && usesDevKey(v.jwt) === true && offLoopback(v.host)) {
        report(
          `key "control.host" is ${JSON.stringify(v.host)} but the control port trusts the committed development key. ` +
            `Fix: set control.jwt.public_key_file, control.jwt.jwks_file or control.jwt.jwks_url to your issuer's keys, or keep control.host on 127.0.0.1.`,
        );
      }
    },
    // The control port's tokens name no job.
    compile: ({ jwt, ...rest }) => ({ ...rest, jwt: { ...jwt, jobClaim: null } }),
  },
);

const STATE = {
  dir: path({
    key: "state.dir",
    env: "TOOLGATE_STATE_DIR",
    default: ".toolgate",
    doc: "Directory for toolgate's own state (the audit trail by default). Relative to the config file, or the working directory.",
  }),
};

const AUDIT = section(
  {
    trail: {
      enabled: bool({
        key: "audit.trail.enabled",
        env: "TOOLGATE_AUDIT_TRAIL_ENABLED",
        default: true,
        doc: "Write the tamper-evident local audit trail (JSON Lines, hash-chained). See docs/audit.md.",
      }),
      dir: path({
        key: "audit.trail.dir",
        env: "TOOLGATE_AUDIT_TRAIL_DIR",
        default: null,
        doc: "Directory of the audit trail files. Default: `<state.dir>/audit`.",
      }),
      maxFileBytes: int({
        key: "audit.trail.max_file_bytes",
        env: "TOOLGATE_AUDIT_TRAIL_MAX_FILE_BYTES",
        min: 4096,
        max: 1024 * 1024 * 1024,
        default: 64 * 1024 * 1024,
        doc: "Rotate the trail file when it would exceed this size; the hash chain continues in the next file.",
      }),
    },
    redaction: oneOf(["hash", "erase"], {
      key: "audit.redaction",
      env: "TOOLGATE_AUDIT_REDACTION",
      default: "hash",
      doc: "What default redaction does to a secret: `hash` (keyed HMAC-SHA256, correlatable) or `erase`.",
    }),
    hmacKeyFile: path({
      key: "audit.hmac_key_file",
      env: "TOOLGATE_AUDIT_HMAC_KEY_FILE",
      default: null,
      doc: "File holding the key for keyed hashing (at least 16 bytes). Without it (and without TOOLGATE_AUDIT_HMAC_KEY) a random key is made per process, so hashes correlate only within one run.",
    }),
    hmacKeyValue: text({
      key: "audit.hmac_key",
      env: "TOOLGATE_AUDIT_HMAC_KEY",
      pattern: /^.{16,}$/s,
      hint: "at least 16 characters",
      default: null,
      doc: "The keyed-hashing key itself (prefer the file, or a Secret-mounted env var). Never logged.",
      secret: true,
    }),
    logDecisions: bool({
      key: "audit.log_decisions",
      env: "TOOLGATE_AUDIT_LOG_DECISIONS",
      default: true,
      doc: "Write one JSON log line per decision and per action report (stdout, level info).",
    }),
    /** Audit records not yet written that may wait in memory; past it, decisions are denied audit_unavailable. */
    maxBacklogBytes: int({
      key: "audit.max_backlog_bytes",
      env: "TOOLGATE_AUDIT_MAX_BACKLOG_BYTES",
      min: 65536,
      max: 1024 * 1024 * 1024,
      default: 16 * 1024 * 1024,
      doc: "Audit records that cannot be written yet (a full or failing disk under the trail, an audit worker that stopped) wait in memory up to this many bytes of JSON. Past it, decisions are denied with reason `audit_unavailable` (fail closed: no action goes unrecorded) and counted instead of recorded, until the backlog is written; the episode is logged (audit.backlog_full, audit.backlog_recovered). Keep it well inside the container's memory limit. See docs/audit.md.",
    }),
    /** Audit on a worker thread (AuditClient) instead of the main thread. */
    worker: bool({
      key: "audit.worker",
      env: "TOOLGATE_AUDIT_WORKER",
      default: true,
      doc: "Do the audit work (redaction, spans and their export, the trail, decision log lines) on a worker thread, off the decision path. false: on the main thread, as an embedding or a one-core budget may prefer.",
    }),
  },
  {
    compile: ({ trail, hmacKeyFile: file, hmacKeyValue: value, ...rest }, ctx) => ({
      ...rest,
      trail: { ...trail, dir: trail.dir ?? resolve(ctx.stateDir, "audit") },
      hmacKey:
        value !== null
          ? hmacKey("env", null, value)
          : file !== null
            ? hmacKey("file", file, null)
            : hmacKey("random", null, null),
    }),
  },
);

/** Where the audit's keyed-hashing key comes from. */
function hmacKey<S extends "env" | "file" | "random">(
  source: S,
  file: string | null,
  value: string | null,
) {
  return { source, file, value };
}

const TRACING = {
  maxQueueSize: int({
    key: "tracing.max_queue_size",
    env: "TOOLGATE_TRACING_MAX_QUEUE_SIZE",
    min: 16,
    max: 1_000_000,
    default: 8192,
    doc: "Spans waiting for export; beyond this they are dropped and counted (decisions never wait for the collector). Other tracing settings are the standard OTEL_* variables.",
  }),
  scheduledDelayMs: int({
    key: "tracing.scheduled_delay_ms",
    env: "TOOLGATE_TRACING_SCHEDULED_DELAY_MS",
    min: 10,
    max: 60_000,
    default: 500,
    doc: "How long queued spans wait at most before they are exported; a full batch (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512) leaves at once.",
  }),
  maxConcurrentExports: int({
    key: "tracing.max_concurrent_exports",
    env: "TOOLGATE_TRACING_MAX_CONCURRENT_EXPORTS",
    min: 1,
    max: 8,
    default: 2,
    doc: "Span exports in flight at once, each of up to OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans: spans held stay bounded by max_queue_size plus this many batches.",
  }),
};

const LOG = {
  level: oneOf(["error", "warn", "info", "debug", "silent"], {
    key: "log.level",
    env: "TOOLGATE_LOG_LEVEL",
    default: "info",
    doc: "Least severity written to the log (JSON lines on stdout, the one log destination).",
  }),
};

/** The whole schema, in the order of docs/configuration.md. */
export const SPEC = section(
  {
    agent: AGENT,
    server: SERVER,
    policy: POLICY,
    identity: IDENTITY,
    control: CONTROL,
    approvals: APPROVALS,
    containment: CONTAINMENT,
    session: SESSION,
    grants: GRANTS,
    fleet: FLEET,
    console: CONSOLE,
    state: STATE,
    audit: AUDIT,
    tracing: TRACING,
    log: LOG,
  },
  {
    // rules across sections: the agent port's identity against its listen address
    check({ identity, server }, { report }) {
      const host = server.agent.host;
      if (identity.mode === "trusted" && offLoopback(host)) {
        report(
          `key "identity.mode" is "trusted" but "server.agent.host" is ${JSON.stringify(host)}. ` +
            `Fix: trusted identity is allowed only on loopback; set server.agent.host to 127.0.0.1.`,
        );
      }
      // The development key is public: never trust it on a port others can reach.
      if (identity.mode === "jwt" && usesDevKey(identity.jwt) === true && offLoopback(host)) {
        report(
          `key "server.agent.host" is ${JSON.stringify(host)} but identity.mode jwt trusts the committed development key. ` +
            `Fix: set identity.jwt.public_key_file, identity.jwt.jwks_file or identity.jwt.jwks_url, or keep server.agent.host on 127.0.0.1.`,
        );
      }
    },
    compile: (v, ctx) => ({ ...v, origin: ctx.origin }),
  },
);

/** Every field, in spec order: what the validator, the env loader and the docs read. */
export const FIELDS: readonly FieldSpec[] = fieldsOf(SPEC);

/** The validated configuration every module is built from. */
export type CompiledConfig = Infer<typeof SPEC>;

export type { JwtConfig } from "../identity/config";
