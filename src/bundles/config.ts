/**
 * The `policy` section of the config schema: the bundle, where it comes from
 * (file, HTTP, OCI), polling, signatures, last-known-good and the candidate
 * bundle. Leaf-level: imports only the schema builder and src/shared.
 */
import { resolve } from "node:path";
import { bool, int, oneOf, path, section, text, type Infer } from "../shared/config-spec";
import { BUNDLE_SIGNING_ALGORITHMS } from "../shared/algorithms";
import { defaultBundlePath } from "../shared/paths";

export const POLICY = section(
  {
    bundle: path({
      key: "policy.bundle",
      env: "TOOLGATE_BUNDLE",
      default: null,
      doc: "Path of the policy bundle (.tar.gz built by `opa build -t wasm`, or a directory). Default: the embedded support-triage bundle.",
    }),
    entrypoint: text({
      key: "policy.entrypoint",
      env: "TOOLGATE_ENTRYPOINT",
      pattern: /^[A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*$/,
      hint: "a wasm entrypoint such as toolgate/decision",
      default: "toolgate/decision",
      doc: "The wasm entrypoint that returns toolgate's decision document (see docs/policy-contract.md).",
    }),
    // -- containment: candidate policy in shadow (docs/containment.md)
    /** A candidate bundle evaluated beside the active one, for the record only (null: none). */
    candidate: path({
      key: "policy.candidate.bundle",
      env: "TOOLGATE_CANDIDATE_BUNDLE",
      default: null,
      doc: "A second bundle (file or directory) evaluated beside the active one on every decision, for the record only: its answer goes to the span (`toolgate.candidate.outcome`), the trail and, when it differs, a `candidate.divergence` log line and `toolgate_candidate_divergences_total`. Never changes an answer. Loaded once at start; a bundle that fails to load is logged and skipped.",
    }),
    // -- live policy: bundle sources, polling, signatures, last-known-good (docs/live-policy.md)
    source: oneOf(["file", "http", "oci"], {
      key: "policy.source",
      env: "TOOLGATE_POLICY_SOURCE",
      default: "file",
      doc: "Where the bundle comes from: `file` (`policy.bundle`, reloaded when it changes), `http` (`policy.http.url`, polled) or `oci` (`policy.oci.reference`, polled).",
    }),
    fileWatchIntervalMs: int({
      key: "policy.file.watch_interval_ms",
      env: "TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS",
      min: 0,
      max: 3_600_000,
      default: 1000,
      doc: "How often a `file` bundle is checked for changes (size, mtime); a change is reloaded once it has been stable for 250 ms. 0: never reload. The embedded bundle is not watched.",
    }),
    // where the bundle is (next to the source); compiled into `http.url`
    httpUrl: text({
      key: "policy.http.url",
      env: "TOOLGATE_POLICY_HTTP_URL",
      pattern: /^https?:\/\/\S+$/,
      hint: "an http(s) URL",
      default: null,
      doc: "The bundle's URL (`policy.source: http`), polled with `If-None-Match`. Credentials belong in `policy.http.bearer_token_file`, not in the URL.",
    }),
    oci: {
      reference: text({
        key: "policy.oci.reference",
        env: "TOOLGATE_POLICY_OCI_REFERENCE",
        pattern:
          /^[A-Za-z0-9.-]+(:\d+)?\/[a-z0-9._/-]+(:[A-Za-z0-9_.-]{1,128}|@sha256:[a-f0-9]{64})$/,
        hint: "registry/repository:tag or registry/repository@sha256:…",
        default: null,
        doc: "The bundle's OCI reference (`policy.source: oci`): an image whose layer of media type `application/vnd.oci.image.layer.v1.tar+gzip` is the bundle, as OPA's OCI downloader reads it.",
      }),
      plainHttp: bool({
        key: "policy.oci.plain_http",
        env: "TOOLGATE_POLICY_OCI_PLAIN_HTTP",
        default: false,
        doc: "Talk to the OCI registry over plain HTTP (a loopback or test registry only).",
      }),
    },
    http: {
      minDelaySeconds: int({
        key: "policy.http.min_delay_seconds",
        env: "TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS",
        min: 1,
        max: 86400,
        default: 60,
        doc: "Polling (http and oci): the next poll waits a random delay between the min and the max (OPA's `polling.min_delay_seconds`).",
      }),
      maxDelaySeconds: int({
        key: "policy.http.max_delay_seconds",
        env: "TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS",
        min: 1,
        max: 86400,
        default: 120,
        doc: "Polling (http and oci): the upper bound of the random delay, and of the exponential backoff (with jitter) after failures.",
      }),
      bearerTokenFile: path({
        key: "policy.http.bearer_token_file",
        env: "TOOLGATE_POLICY_HTTP_BEARER_TOKEN_FILE",
        default: null,
        doc: "File holding a token sent as `Authorization: Bearer …` to the bundle server or registry; re-read on every poll (rotation). Never logged.",
      }),
      caFile: path({
        key: "policy.http.ca_file",
        env: "TOOLGATE_POLICY_HTTP_CA_FILE",
        default: null,
        doc: "PEM CA certificate(s) trusted for the bundle server's TLS certificate (instead of the system's). TLS is always verified.",
      }),
      maxBytes: int({
        key: "policy.http.max_bytes",
        env: "TOOLGATE_POLICY_HTTP_MAX_BYTES",
        min: 1024,
        max: 1024 * 1024 * 1024,
        default: 32 * 1024 * 1024,
        doc: "Largest bundle download accepted, in bytes; the download is aborted past it (`bundle_too_large`).",
      }),
      timeoutMs: int({
        key: "policy.http.timeout_ms",
        env: "TOOLGATE_POLICY_HTTP_TIMEOUT_MS",
        min: 100,
        max: 600_000,
        default: 10_000,
        doc: "A bundle request (headers and body) that takes longer is aborted and counted as a failure.",
      }),
    },
    persistDir: path({
      key: "policy.persist_dir",
      env: "TOOLGATE_POLICY_PERSIST_DIR",
      default: null,
      doc: "Where the last activated http/oci bundle is kept (written atomically) to be activated at boot when the source is unreachable. Default: `<state.dir>/bundles`.",
    }),
    signing: {
      keysFile: path({
        key: "policy.signing.keys_file",
        env: "TOOLGATE_POLICY_SIGNING_KEYS_FILE",
        default: null,
        doc: 'JSON map of verification keys, as OPA\'s `keys`: `{"<key id>": {"algorithm": "RS256", "key": "<PEM public key or HMAC secret>", "scope": "…"}}`. Setting it (or `public_key_file`) turns signature verification on: unsigned bundles are refused.',
      }),
      publicKeyFile: path({
        key: "policy.signing.public_key_file",
        env: "TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE",
        default: null,
        doc: "One verification key: a PEM public key (RS*, PS*, ES*) or a file holding the HMAC secret (HS*), known as `policy.signing.key_id`. Exclusive with `keys_file`.",
      }),
      keyId: text({
        key: "policy.signing.key_id",
        env: "TOOLGATE_POLICY_SIGNING_KEY_ID",
        pattern: /^\S{1,256}$/,
        hint: "a key id",
        default: null,
        doc: "The key that must verify every bundle (OPA's `signing.keyid`). Unset: the token's `kid` header (then its `keyid` claim) picks a key from `keys_file`; with `public_key_file` the id is `default`.",
      }),
      algorithm: oneOf(BUNDLE_SIGNING_ALGORITHMS, {
        key: "policy.signing.algorithm",
        env: "TOOLGATE_POLICY_SIGNING_ALGORITHM",
        default: "RS256",
        doc: "Algorithm of `policy.signing.public_key_file` (a `keys_file` names one per key).",
      }),
      scope: text({
        key: "policy.signing.scope",
        env: "TOOLGATE_POLICY_SIGNING_SCOPE",
        pattern: /^.{1,256}$/,
        hint: "a scope",
        default: null,
        doc: "The `scope` claim a bundle's signature must carry (OPA's `signing.scope`); unset: the key's scope, else none.",
      }),
    },
  },
  {
    check(v, { report }) {
      if (v.source === "http" && v.httpUrl === null) {
        report(
          `key "policy.source" is "http" but "policy.http.url" is not set. Fix: set the bundle URL.`,
        );
      }
      if (v.source === "oci" && v.oci.reference === null) {
        report(
          `key "policy.source" is "oci" but "policy.oci.reference" is not set. Fix: set registry/repository:tag.`,
        );
      }
      const { minDelaySeconds: min, maxDelaySeconds: max } = v.http;
      if (min !== undefined && max !== undefined && min > max) {
        report(
          `key "policy.http.min_delay_seconds" exceeds "policy.http.max_delay_seconds". Fix: make min ≤ max.`,
        );
      }
      const { keysFile, publicKeyFile, keyId, scope } = v.signing;
      if (keysFile !== null && publicKeyFile !== null) {
        report(
          `keys "policy.signing.keys_file" and "policy.signing.public_key_file" are exclusive. Fix: set only one.`,
        );
      }
      if (keysFile === null && publicKeyFile === null && (keyId !== null || scope !== null)) {
        report(
          `"policy.signing.key_id"/"policy.signing.scope" need a key. Fix: set "policy.signing.keys_file" or "policy.signing.public_key_file".`,
        );
      }
    },
    compile({ bundle, httpUrl, http, persistDir, signing, ...rest }, ctx) {
      return {
        ...rest,
        bundle: bundle ?? defaultBundlePath(),
        embedded: bundle === null,
        http: { url: httpUrl, ...http },
        persistDir: persistDir ?? resolve(ctx.stateDir, "bundles"),
        /** Null: signature verification off (a signed bundle is then refused, as OPA does). */
        signing: signing.keysFile === null && signing.publicKeyFile === null ? null : signing,
      };
    },
  },
);

/** The compiled `policy` section. */
export type PolicyConfig = Infer<typeof POLICY>;
