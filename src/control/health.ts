/**
 * PostgreSQL's health as a component: `store.ping()` with a short timeout,
 * refreshed in the background every `cacheMs`, so /health/ready and every
 * write that asks read a recent answer without waiting for a ping (a write
 * waits only when no answer is younger than three refresh intervals).
 */
import { normalizeError, toolgateError } from "../errors";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import type { FleetStore } from "./store/types";

export interface StoreHealthOptions {
  store: FleetStore;
  log: Logger;
  /** How long an answer is reused (default 1000 ms). */
  cacheMs?: number;
  /** How long a ping may take before PostgreSQL counts as unreachable (default 1000 ms). */
  timeoutMs?: number;
}

export class StoreHealth implements Component {
  readonly name = "postgres";
  private last: { at: number; problem: string | undefined } | undefined;
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(private readonly opts: StoreHealthOptions) {}

  start(): Promise<void> {
    this.started = true;
    // kept fresh for the metrics and the log even when nobody asks
    this.timer = setInterval(() => void this.refresh(), this.opts.cacheMs ?? 1000);
    this.timer.unref();
    return this.refresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.inFlight;
  }

  /** Pings unless the cached answer is fresh; never rejects. */
  refresh(): Promise<void> {
    const cacheMs = this.opts.cacheMs ?? 1000;
    if (this.last !== undefined && Date.now() - this.last.at < cacheMs) return Promise.resolve();
    this.inFlight ??= this.ping().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async ping(): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? 1000;
    let timer: NodeJS.Timeout | undefined;
    const before = this.last?.problem;
    let problem: string | undefined;
    try {
      await Promise.race([
        this.opts.store.ping(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } catch (e) {
      problem = `PostgreSQL unreachable: ${normalizeError(e).message}`;
    } finally {
      clearTimeout(timer);
    }
    this.last = { at: Date.now(), problem };
    if (problem !== undefined && before === undefined)
      this.opts.log.error("the fleet store is unreachable", {
        event: "control.store_down",
        error: problem,
      });
    else if (problem === undefined && before !== undefined)
      this.opts.log.info("the fleet store is reachable again", { event: "control.store_up" });
  }

  /**
   * Fails fast with fleet_store_unavailable while the last ping failed. The
   * decision path's writes (budget reservations) wait for no ping: a recent
   * answer is used as it is and a stale one refreshed in the background.
   */
  async assertUp(): Promise<void> {
    const cacheMs = this.opts.cacheMs ?? 1000;
    const age = this.last === undefined ? Infinity : Date.now() - this.last.at;
    if (age >= 3 * cacheMs) await this.refresh();
    else if (age >= cacheMs) void this.refresh();
    const problem = this.last?.problem;
    if (problem !== undefined) throw toolgateError("fleet_store_unavailable", problem);
  }

  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    const problem = this.last?.problem;
    return problem === undefined ? { state: "OK" } : { state: "ERROR", detail: problem };
  }
}
