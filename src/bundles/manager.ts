import { readFileSync } from "node:fs";
import type { Attributes } from "@opentelemetry/api";
import type { PolicyConfig } from "./config";
import { normalizeError, type ErrorCode, rethrowAs } from "../errors";
import type { Logger } from "../shared/log";
import type { Component, ComponentStatus } from "../shared/lifecycle";
import { parseBundle, type Bundle } from "../policy/bundle";
import { PolicyEngine } from "../policy/engine";
import { readTarGz } from "../shared/tar";
import { BundleStore } from "./persist";
import { readKeysFile, verifyBundleSignature, type VerificationConfig } from "./signing";
import { FileSource, HttpSource, OciSource, type BundleSource } from "./sources";

/** Plugin states, as OPA's plugin manager names them. */
export type PluginState = "NOT_READY" | "OK" | "ERROR";

export interface BundleStatus {
  name: string;
  /** Where the bundle comes from (a path, an http(s) URL without credentials, oci://…). */
  source: string;
  source_type: "file" | "http" | "oci";
  state: PluginState;
  revision: string | null;
  /** When the active bundle was activated (same as last_successful_activation). */
  activated_at: string | null;
  last_successful_activation: string | null;
  /** Last time a new bundle was downloaded (read, for files) from the source. */
  last_successful_download: string | null;
  /** Last time the source answered (a download or "not modified"). */
  last_successful_request: string | null;
  last_request: string | null;
  /** ETag (http) or manifest digest (oci) of the active bundle's download. */
  etag: string | null;
  consecutive_failures: number;
  signature_verification: boolean;
  /** Whether the active bundle came from the source or from the persisted last-known-good copy. */
  origin: "source" | "persisted" | null;
  persisted: {
    path: string;
    in_use: boolean;
    revision: string | null;
    saved_at: string | null;
  } | null;
  last_error: { code: ErrorCode; message: string; at: string } | null;
}

export interface BundleManagerOptions {
  /** Path of the bundle (.tar.gz or directory): the file source when `source` is not given. */
  path: string;
  entrypoint: string;
  log: Logger;
  /**
   * Checks a freshly instantiated engine before it may serve (e.g. a smoke
   * evaluation whose output must satisfy the decision contract). Throws to
   * refuse the bundle.
   */
  smokeTest?: (engine: PolicyEngine) => void;
  /** Where bundles come from; default: the file at `path`, not watched. */
  source?: BundleSource;
  /** Signature verification; undefined: off (a signed bundle is then refused, as OPA does). */
  verification?: VerificationConfig;
  /** Directory for the last-known-good copy (sources that deliver archives). */
  persistDir?: string;
  /** A span per activation and rejection, when audit is on. */
  spans?: { bundleSpan(name: string, attributes: Attributes, error?: string): void };
  /** Told of every activation and rejection (metrics). */
  onEvent?: (result: "activated" | "rejected", code?: string) => void;
}

/** Builds the verification config from `policy.signing`; undefined when verification is off. */
export function verificationFromConfig(
  signing: PolicyConfig["signing"],
): VerificationConfig | undefined {
  if (signing === null) return undefined;
  const cfg: VerificationConfig = { keys: new Map() };
  if (signing.keysFile !== null) {
    cfg.keys = readKeysFile(signing.keysFile);
    if (signing.keyId !== null) cfg.keyId = signing.keyId;
  } else if (signing.publicKeyFile !== null) {
    const file = signing.publicKeyFile;
    const key = rethrowAs("config_invalid", `policy.signing.public_key_file: cannot read ${file}`, () =>
      readFileSync(file),
    );
    const id = signing.keyId ?? "default";
    cfg.keys.set(id, { algorithm: signing.algorithm, key });
    cfg.keyId = id;
  }
  if (signing.scope !== null) cfg.scope = signing.scope;
  return cfg;
}

/** The bundle source `policy.source` names. */
export function sourceFromConfig(policy: PolicyConfig): BundleSource {
  const http = {
    minDelaySeconds: policy.http.minDelaySeconds,
    maxDelaySeconds: policy.http.maxDelaySeconds,
    bearerTokenFile: policy.http.bearerTokenFile,
    caFile: policy.http.caFile,
    maxBytes: policy.http.maxBytes,
    timeoutMs: policy.http.timeoutMs,
  };
  switch (policy.source) {
    case "http":
      return new HttpSource(policy.http.url as string, http);
    case "oci":
      return new OciSource(policy.oci.reference as string, policy.oci.plainHttp, http);
    case "file":
      return new FileSource(policy.bundle, policy.embedded ? 0 : policy.fileWatchIntervalMs);
  }
}

/**
 * Owns the active policy. A bundle is downloaded (or read), its signature
 * verified, its files read, its wasm instantiated and smoke-tested completely
 * before it replaces the active one in a single assignment, so a decision sees
 * either the old engine or the new, never a half-loaded one. Any failure leaves
 * the active engine in place (or none: every decision is then refused, fail
 * closed) and is retried on the next poll. Activated remote bundles are
 * persisted and, when the source is unreachable at boot, the persisted copy is
 * verified and activated instead.
 */
export class BundleManager {
  private readonly opts: BundleManagerOptions;
  private readonly source: BundleSource;
  private readonly store: BundleStore | undefined;
  private engine: PolicyEngine | undefined;
  private state: PluginState = "NOT_READY";
  private activatedAt: string | null = null;
  private lastDownload: string | null = null;
  private lastSuccessfulRequest: string | null = null;
  private lastRequest: string | null = null;
  private etag: string | null = null;
  private failures = 0;
  private origin: "source" | "persisted" | null = null;
  private persisted: { revision: string | null; saved_at: string | null } = {
    revision: null,
    saved_at: null,
  };
  private lastError: BundleStatus["last_error"] = null;
  private timer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private stopped = false;
  private polling: Promise<void> | undefined;
  private starting: Promise<void> | undefined;

  constructor(opts: BundleManagerOptions) {
    this.opts = opts;
    this.source = opts.source ?? new FileSource(opts.path, 0);
    this.store =
      this.source.persist && opts.persistDir !== undefined
        ? new BundleStore(opts.persistDir, this.source.location)
        : undefined;
  }

  /**
   * Loads the bundle once (falling back to the persisted copy when the source
   * fails and nothing is active), then keeps polling the source. Never throws:
   * failures are status.
   */
  start(): Promise<void> {
    this.starting ??= (async () => {
      await this.poll();
      if (this.engine === undefined && this.store !== undefined && !this.stopped)
        await this.loadPersisted();
      this.schedule();
    })();
    return this.starting;
  }

  /** One poll of the source; resolves when it has been handled. */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => {
      this.polling = undefined;
    });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    if (this.stopped) return;
    this.lastRequest = new Date().toISOString();
    try {
      const got = await this.source.fetch(this.abort.signal);
      this.lastSuccessfulRequest = new Date().toISOString();
      if (got.kind === "not_modified") {
        // the source still holds what was refused last: that refusal stays
        // visible (and counted) until a newer bundle activates
        if (got.current === false) return;
        this.failures = 0;
        if (this.origin === "persisted") this.origin = "source"; // the source confirms the copy
        this.lastError = null; // as OPA: the source confirms the active bundle
        return;
      }
      this.lastDownload = this.lastSuccessfulRequest;
      await verifyBundleSignature(got.files, this.opts.verification);
      const bundle = parseBundle(got.files, got.name, this.source.location);
      await this.swapIn(bundle, "source");
      this.etag = got.etag ?? null;
      this.failures = 0;
      commit(this.source, got.etag);
      if (this.store !== undefined && got.bytes !== undefined) this.persist(got.bytes, bundle, got.etag);
    } catch (e) {
      if (this.stopped) return;
      this.failures++;
      this.fail(e);
    }
  }

  private persist(bytes: Buffer, bundle: Bundle, etag: string | undefined): void {
    try {
      const meta = (this.store as BundleStore).save(bytes, {
        source: this.source.location,
        name: bundle.name,
        revision: bundle.manifest.revision,
        etag: etag ?? null,
      });
      this.persisted = { revision: meta.revision, saved_at: meta.saved_at };
    } catch (e) {
      const err = normalizeError(e);
      this.opts.log.error("bundle not persisted", {
        event: "bundle.persist_failed",
        code: err.code,
        error: err.message,
      });
    }
  }

  /** Activates the persisted last-known-good copy, verified like a download. */
  private async loadPersisted(): Promise<void> {
    const store = this.store as BundleStore;
    try {
      const saved = store.load();
      if (saved === undefined) return;
      this.persisted = { revision: saved.meta.revision, saved_at: saved.meta.saved_at };
      const files = await readTarGz(saved.bytes);
      await verifyBundleSignature(files, this.opts.verification);
      const bundle = parseBundle(files, saved.meta.name, this.source.location);
      await this.swapIn(bundle, "persisted");
      this.etag = saved.meta.etag;
      commit(this.source, saved.meta.etag ?? undefined);
    } catch (e) {
      this.fail(e, store.bundlePath);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const delay = this.source.nextDelayMs(this.failures);
    if (delay === null) return;
    this.timer = setTimeout(() => {
      void this.poll().finally(() => this.schedule());
    }, delay);
    this.timer.unref();
  }

  /** Instantiates and checks `bundle`, then swaps it in. Throws (and records) on refusal. */
  async activate(bundle: Bundle): Promise<PolicyEngine> {
    try {
      return await this.swapIn(bundle, "source");
    } catch (e) {
      this.fail(e, bundle.source);
      throw normalizeError(e);
    }
  }

  private async swapIn(bundle: Bundle, origin: "source" | "persisted"): Promise<PolicyEngine> {
    const engine = await PolicyEngine.create(bundle, { entrypoint: this.opts.entrypoint });
    this.opts.smokeTest?.(engine);
    this.engine = engine; // the swap: one assignment; decisions read it synchronously
    this.state = "OK";
    this.origin = origin;
    this.activatedAt = new Date().toISOString();
    // a persisted copy is activated because the source failed: that error stays visible
    if (origin === "source") this.lastError = null;
    const fields = {
      bundle: engine.info.bundle,
      revision: engine.info.revision,
      source: this.source.location,
      origin,
    };
    this.opts.log.info("bundle activated", { event: "bundle.activated", ...fields });
    this.opts.onEvent?.("activated");
    this.span("toolgate.bundle activate", {
      "toolgate.bundle.name": fields.bundle,
      "toolgate.bundle.revision": fields.revision,
      "toolgate.bundle.source": fields.source,
      "toolgate.bundle.origin": origin,
    });
    return engine;
  }

  private fail(e: unknown, where: string = this.source.location): void {
    const err = normalizeError(e);
    if (this.engine === undefined) this.state = "ERROR";
    this.lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
    this.opts.onEvent?.("rejected", err.code);
    this.opts.log.error("bundle rejected", {
      event: "bundle.rejected",
      code: err.code,
      error: err.message,
      source: where,
      active_revision: this.engine?.info.revision ?? null,
    });
    this.span(
      "toolgate.bundle reject",
      {
        "toolgate.bundle.source": where,
        "toolgate.error.code": err.code,
        ...(this.engine ? { "toolgate.bundle.active_revision": this.engine.info.revision } : {}),
      },
      err.message,
    );
  }

  private span(name: string, attributes: Attributes, error?: string): void {
    this.opts.spans?.bundleSpan(name, attributes, error);
  }

  active(): PolicyEngine | undefined {
    return this.engine;
  }

  ready(): boolean {
    return this.engine !== undefined;
  }

  status(): BundleStatus {
    return {
      name: this.engine?.info.bundle ?? this.source.location,
      source: this.source.location,
      source_type: this.source.type,
      state: this.state,
      revision: this.engine?.info.revision ?? null,
      activated_at: this.activatedAt,
      last_successful_activation: this.activatedAt,
      last_successful_download: this.lastDownload,
      last_successful_request: this.lastSuccessfulRequest,
      last_request: this.lastRequest,
      etag: this.etag,
      consecutive_failures: this.failures,
      signature_verification: this.opts.verification !== undefined,
      origin: this.origin,
      persisted:
        this.store === undefined
          ? null
          : {
              path: this.store.bundlePath,
              in_use: this.origin === "persisted",
              revision: this.persisted.revision,
              saved_at: this.persisted.saved_at,
            },
      last_error: this.lastError,
    };
  }

  /**
   * Stops polling, aborts a download in flight and resolves once the poll
   * (or the start) in flight has finished: nothing is activated after this.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await Promise.all([this.starting, this.polling]);
  }

  /**
   * The manager as a lifecycle component ("bundle"): its state and, as the
   * detail, the last error (on OK: a refused update or an unreachable
   * source while the active bundle keeps serving). Its own status() is the
   * full bundle status that /v1/status publishes.
   */
  readonly component: Component = {
    name: "bundle",
    start: () => this.start(),
    stop: () => this.stop(),
    status: (): ComponentStatus => {
      if (this.stopped) return { state: "NOT_READY", detail: "stopped" };
      const detail =
        this.lastError?.message ?? (this.state === "OK" ? undefined : "no policy bundle is active");
      return detail === undefined ? { state: this.state } : { state: this.state, detail };
    },
  };
}

function commit(source: BundleSource, etag: string | undefined): void {
  const s = source as BundleSource & { commit?: (etag: string | undefined) => void };
  s.commit?.(etag);
}
