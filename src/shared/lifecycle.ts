/**
 * One lifecycle for the parts that run: each is a `Component` with start,
 * stop and a status in OPA's plugin states, and `Lifecycle` starts them in
 * order, stops them in reverse and aggregates their status into readiness
 * (the idea of OPA's plugin manager; see docs/operators.md#health).
 */

/**
 * NOT_READY: not started yet, stopped, or still getting ready (no bundle
 * yet). OK: doing its job. ERROR: cannot do its job (what its detail says).
 */
export type ComponentState = "NOT_READY" | "OK" | "ERROR";

export interface ComponentStatus {
  state: ComponentState;
  /** What is wrong (or, on OK, worth knowing: e.g. spans dropped). */
  detail?: string;
}

export interface Component {
  /** Its key in `components` (status, /health/ready) and its `component` label. */
  readonly name: string;
  /**
   * Reported, but not part of readiness: a part whose failure must not take
   * the sidecar out of service (the candidate policy, evaluated for the
   * record only).
   */
  readonly advisory?: boolean;
  start(): Promise<void>;
  /**
   * Stops, and resolves once work in flight has finished (a download, a
   * flush). Safe whether or not start ran (it releases what the component
   * was built with), and safe to call again.
   */
  stop(): Promise<void>;
  status(): ComponentStatus;
}

/** One component in an aggregated status. */
export interface ComponentReport {
  state: ComponentState;
  detail?: string;
  /** Present (true) on advisory components: their state does not decide readiness. */
  advisory?: true;
}

export interface Readiness {
  /** Every component that is not advisory is OK. */
  ready: boolean;
  /** By name, in start order. */
  components: Record<string, ComponentReport>;
}

/** NOT_READY before start and after stop; undefined while running (the component says more). */
export function notRunning(started: boolean, stopped: boolean): ComponentStatus | undefined {
  if (stopped) return { state: "NOT_READY", detail: "stopped" };
  if (!started) return { state: "NOT_READY", detail: "not started" };
  return undefined;
}

/** The gauge encoding of a state (toolgate_component_status): 1 OK, 0 NOT_READY, -1 ERROR. */
export function stateValue(state: ComponentState): number {
  return state === "OK" ? 1 : state === "ERROR" ? -1 : 0;
}

/**
 * Runs a list of components: starts them in order (a failed start stops
 * those already started, in reverse, then rethrows), stops them in reverse,
 * and aggregates their status.
 */
export class Lifecycle {
  private readonly started = new Set<Component>();
  private readonly stopped = new Set<Component>();
  private stopping: Promise<void> | undefined;

  /**
   * @param onStopError told of each component whose stop failed (the stop
   *   goes on with the others; the first such error is rethrown at the end)
   */
  constructor(
    readonly components: readonly Component[],
    private readonly onStopError?: (name: string, error: unknown) => void,
  ) {
    const names = new Set<string>();
    for (const c of components) {
      if (names.has(c.name)) throw new Error(`two components are named ${c.name}`);
      names.add(c.name);
    }
  }

  /** Starts each component in order; if one fails, stops those already started (in reverse) and rethrows. */
  async start(): Promise<void> {
    for (const c of this.components) {
      if (this.stopping !== undefined) throw new Error("the components are stopping");
      try {
        await c.start();
      } catch (e) {
        await this.stopAll([...this.started]).catch(() => undefined);
        throw e;
      }
      this.started.add(c);
    }
  }

  /**
   * Stops every component not yet stopped, in reverse order, each awaited
   * before the next: the started ones and those built but never started
   * (a start that failed, or never came), so nothing they hold outlives
   * this. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.stopAll(this.components);
    return this.stopping;
  }

  private async stopAll(list: readonly Component[]): Promise<void> {
    let first: { error: unknown } | undefined;
    for (const c of [...list].reverse()) {
      if (this.stopped.has(c)) continue;
      this.stopped.add(c);
      try {
        await c.stop();
      } catch (e) {
        first ??= { error: e };
        this.onStopError?.(c.name, e);
      }
    }
    if (first !== undefined) throw first.error;
  }

  /** Each component's status (a status() that throws reads as ERROR), and whether all are OK. */
  status(): Readiness {
    const components: Record<string, ComponentReport> = {};
    let ready = true;
    for (const c of this.components) {
      let s: ComponentStatus;
      try {
        s = c.status();
      } catch (e) {
        const m = (e as { message?: unknown } | undefined)?.message;
        s = { state: "ERROR", detail: typeof m === "string" ? m : String(e) };
      }
      const report: ComponentReport = { state: s.state };
      if (s.detail !== undefined) report.detail = s.detail;
      if (c.advisory === true) report.advisory = true;
      else if (s.state !== "OK") ready = false;
      components[c.name] = report;
    }
    return { ready, components };
  }
}
