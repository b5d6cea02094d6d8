import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** V8's gc() as the --expose-gc extension offers it (options: V8's gc-extension). */
type GcFunction = (options?: {
  type?: "major" | "minor";
  execution?: "sync" | "async";
  flavor?: "regular" | "last-resort";
}) => void;

/** What a memory-reducing collection gave back (young generation and whole heap, in bytes resident). */
export interface MemoryRelease {
  heapBefore: number;
  heapAfter: number;
  youngBefore: number;
  youngAfter: number;
  ms: number;
}

function physical(): { heap: number; young: number } {
  let heap = 0;
  let young = 0;
  for (const s of getHeapSpaceStatistics()) {
    heap += s.physical_space_size;
    if (s.space_name === "new_space") young = s.physical_space_size;
  }
  return { heap, young };
}

/** The gc function: the global one when node runs with --expose-gc, else one taken from a fresh context. */
function gcFunction(): GcFunction | undefined {
  const own = (globalThis as { gc?: unknown }).gc;
  if (typeof own === "function") return own as GcFunction;
  // The extension is installed into contexts created while the flag is on: one
  // throwaway context gets it, and the flag is off again for every later one
  // (what jest does for --logHeapUsage). The main realm never gets a global gc.
  try {
    setFlagsFromString("--expose-gc");
    const fn = runInNewContext("gc") as unknown;
    return typeof fn === "function" ? (fn as GcFunction) : undefined;
  } catch {
    return undefined;
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
}

/**
 * Gives back to the OS what this thread's heap holds and no longer needs: one
 * full, memory-reducing garbage collection (V8's "last resort" collection,
 * what it runs under memory pressure).
 *
 * Start-up allocates fast (modules, the bundle, the wasm compile, the smoke
 * test), and so does load: V8 grows the young generation to its maximum
 * (16 MB semi-spaces, ~23 MB resident) and keeps it, with the free pages of
 * the old generation: a sidecar that then idles would hold them forever
 * (V8's memory reducer does not shrink the young generation while the
 * process idles). This collection shrinks the young generation back to its
 * initial size and releases the heap's free pages: ~25 MB of idle RSS in
 * `toolgate serve` after start-up. Under load the young generation grows
 * again as before (the collection does not change any heap limit or V8 flag,
 * so throughput is unchanged); run it when start-up is done and when the
 * sidecar goes idle (IdleMemoryRelease), never on a request path: it pauses
 * this thread for some tens of milliseconds. Returns undefined when no gc is
 * available.
 *
 * Not concurrently with another thread's call: --expose-gc is process-wide
 * while one call takes its gc (the other could get none).
 */
export function releaseMemory(): MemoryRelease | undefined {
  const gc = gcFunction();
  if (gc === undefined) return undefined;
  const before = physical();
  const t0 = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  const ms = performance.now() - t0;
  const after = physical();
  return {
    heapBefore: before.heap,
    heapAfter: after.heap,
    youngBefore: before.young,
    youngAfter: after.young,
    ms,
  };
}

/** One reading of the process's CPU time: `at` in ms (monotonic), `cpu` user + system in µs, all threads. */
export interface CpuSample {
  at: number;
  cpu: number;
}

export interface IdleSettings {
  /** How long the process must have been idle (ms). */
  windowMs: number;
  /** Idle: less than this fraction of one core used over the window (and per sample step for activity). */
  idleFraction: number;
  /** CPU time (µs) used in busy steps since the last release before another release is due. */
  activityMicros: number;
}

/** What IdleMemoryRelease decides on: recent samples and the busy CPU time since its last release. */
export interface IdleState {
  /** Oldest first; the first is the newest one at least a window old (once there is one). */
  samples: CpuSample[];
  /** CPU time (µs) of the steps between samples that used at least idleFraction of a core. */
  busyMicros: number;
}

export const IDLE_FRACTION = 0.02;
export const ACTIVITY_MICROS = 1_000_000;

export function idleState(first: CpuSample): IdleState {
  return { samples: [first], busyMicros: 0 };
}

/**
 * The decision, a pure function of CPU samples: adds `sample` to `state`
 * and says whether memory is to be released now. Release when the process
 * used less than `idleFraction` of a core over the last full window (idle)
 * and, since the last release, at least `activityMicros` of CPU time in
 * steps that were busy (above `idleFraction`): idle after activity. CPU
 * used while idle never counts as activity, so a sidecar that stays idle
 * (health probes, timers) gets one release, not one every few minutes.
 * On release, the caller starts again from `idleState(a sample taken after
 * the collection)`, so the collection's own CPU time counts for nothing.
 */
export function idleStep(
  state: IdleState,
  sample: CpuSample,
  s: IdleSettings,
): { state: IdleState; release: boolean } {
  const prev = state.samples[state.samples.length - 1];
  let busyMicros = state.busyMicros;
  if (prev !== undefined && sample.at > prev.at) {
    const used = sample.cpu - prev.cpu;
    if (used >= s.idleFraction * (sample.at - prev.at) * 1000) busyMicros += used;
  }
  const samples = [...state.samples, sample];
  // keep one sample at least a window old (the window's start) and the ones after it
  const start = sample.at - s.windowMs;
  while (samples.length > 1 && (samples[1] as CpuSample).at <= start) samples.shift();
  const first = samples[0] as CpuSample;
  const fullWindow = first.at <= start;
  const idle =
    fullWindow && sample.cpu - first.cpu < s.idleFraction * (sample.at - first.at) * 1000;
  if (idle && busyMicros >= s.activityMicros)
    return { state: { samples, busyMicros: 0 }, release: true };
  return { state: { samples, busyMicros }, release: false };
}

/** Reads the process's CPU time now. */
export function cpuSample(): CpuSample {
  const u = process.cpuUsage();
  return { at: performance.now(), cpu: u.user + u.system };
}

/**
 * Calls `release` once whenever the process goes idle after activity
 * (idleStep), checking a quarter window apart with an unref'd timer: one
 * process.cpuUsage() per check, nothing per request, and it never keeps the
 * process alive. stop() clears the timer.
 */
export class IdleMemoryRelease {
  private state: IdleState;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly release: () => void,
    private readonly settings: IdleSettings,
    private readonly sample: () => CpuSample = cpuSample,
  ) {
    this.state = idleState(sample());
    this.timer = setInterval(() => this.check(), Math.max(50, Math.floor(settings.windowMs / 4)));
    this.timer.unref();
  }

  /** One check (the timer's); exposed for tests. */
  check(): boolean {
    const r = idleStep(this.state, this.sample(), this.settings);
    this.state = r.state;
    if (!r.release) return false;
    try {
      this.release();
    } finally {
      // the collection's own CPU time is not activity
      this.state = idleState(this.sample());
    }
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
