import { normalizeError, type ErrorCode } from "../errors";
import type { Logger } from "../util/log";
import { loadBundleFromPath, type Bundle } from "../policy/bundle";
import { PolicyEngine } from "../policy/engine";

/** Plugin states, as OPA's plugin manager names them. */
export type PluginState = "NOT_READY" | "OK" | "ERROR";

export interface BundleStatus {
  name: string;
  source: string;
  state: PluginState;
  revision: string | null;
  activated_at: string | null;
  last_error: { code: ErrorCode; message: string; at: string } | null;
}

export interface BundleManagerOptions {
  /** Path of the bundle (.tar.gz or directory). */
  path: string;
  entrypoint: string;
  log: Logger;
  /**
   * Checks a freshly instantiated engine before it may serve (e.g. a smoke
   * evaluation whose output must satisfy the decision contract). Throws to
   * refuse the bundle.
   */
  smokeTest?: (engine: PolicyEngine) => void;
}

/**
 * Owns the active policy. A bundle is read, instantiated and smoke-tested
 * completely before it replaces the active one in a single assignment, so a
 * decision sees either the old engine or the new, never a half-loaded one. Any
 * failure leaves the active engine in place (or none: every decision is then
 * refused, fail closed).
 */
export class BundleManager {
  private readonly opts: BundleManagerOptions;
  private engine: PolicyEngine | undefined;
  private state: PluginState = "NOT_READY";
  private activatedAt: string | null = null;
  private lastError: BundleStatus["last_error"] = null;

  constructor(opts: BundleManagerOptions) {
    this.opts = opts;
  }

  /** Loads the configured bundle once. Never throws: failures are status. */
  async start(): Promise<void> {
    let bundle: Bundle;
    try {
      bundle = loadBundleFromPath(this.opts.path);
    } catch (e) {
      this.fail(e);
      return;
    }
    try {
      await this.activate(bundle);
    } catch {
      // activate() recorded it; the sidecar stays not ready (fail closed)
    }
  }

  /** Instantiates and checks `bundle`, then swaps it in. Throws on refusal. */
  async activate(bundle: Bundle): Promise<PolicyEngine> {
    try {
      const engine = await PolicyEngine.create(bundle, { entrypoint: this.opts.entrypoint });
      this.opts.smokeTest?.(engine);
      this.engine = engine;
      this.state = "OK";
      this.activatedAt = new Date().toISOString();
      this.lastError = null;
      this.opts.log.info("bundle activated", {
        event: "bundle.activated",
        bundle: engine.info.bundle,
        revision: engine.info.revision,
        source: engine.info.source,
      });
      return engine;
    } catch (e) {
      this.fail(e);
      throw normalizeError(e);
    }
  }

  private fail(e: unknown): void {
    const err = normalizeError(e);
    if (this.engine === undefined) this.state = "ERROR";
    this.lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
    this.opts.log.error("bundle rejected", { event: "bundle.rejected", code: err.code, error: err.message, source: this.opts.path });
  }

  active(): PolicyEngine | undefined {
    return this.engine;
  }

  ready(): boolean {
    return this.engine !== undefined;
  }

  status(): BundleStatus {
    return {
      name: this.engine?.info.bundle ?? this.opts.path,
      source: this.opts.path,
      state: this.state,
      revision: this.engine?.info.revision ?? null,
      activated_at: this.activatedAt,
      last_error: this.lastError,
    };
  }

  stop(): void {
    // nothing to release yet; later sources stop their pollers here
  }
}
