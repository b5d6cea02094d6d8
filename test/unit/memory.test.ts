import { runInNewContext } from "node:vm";
import {
  ACTIVITY_MICROS,
  IDLE_FRACTION,
  IdleMemoryRelease,
  idleState,
  idleStep,
  releaseMemory,
  type CpuSample,
  type IdleSettings,
  type IdleState,
} from "../../src/metrics/memory";

describe("releaseMemory", () => {
  it("collects this thread's heap and leaves no gc exposed anywhere", () => {
    const hadGc = typeof (globalThis as { gc?: unknown }).gc === "function";
    // garbage the young generation must hold until a collection
    let junk: unknown[] | undefined = Array.from({ length: 50_000 }, (_, i) => ({ i, s: `x${i}` }));
    expect(junk).toHaveLength(50_000);
    junk = undefined;
    const r = releaseMemory();
    expect(r).toBeDefined();
    if (r === undefined) return;
    expect(r.heapAfter).toBeLessThanOrEqual(r.heapBefore);
    expect(r.youngAfter).toBeLessThanOrEqual(r.youngBefore);
    expect(r.ms).toBeGreaterThanOrEqual(0);
    // the --expose-gc flag is off again: no new context (jest's, vm users') gets a gc global,
    // and this realm gained none
    expect(runInNewContext("typeof gc")).toBe("undefined");
    expect(typeof (globalThis as { gc?: unknown }).gc === "function").toBe(hadGc);
  });

  it("can run again (each call takes its own throwaway context)", () => {
    expect(releaseMemory()).toBeDefined();
    expect(releaseMemory()).toBeDefined();
    expect(runInNewContext("typeof gc")).toBe("undefined");
  });
});

/** 30 s window checked every 7.5 s, as `toolgate serve` does by default. */
const S: IdleSettings = {
  windowMs: 30_000,
  idleFraction: IDLE_FRACTION,
  activityMicros: ACTIVITY_MICROS,
};
const STEP = S.windowMs / 4;

/**
 * Feeds idleStep one sample per step, the process using `cores[i]` of a core
 * during step i; returns the steps at which it said release (restarting from
 * a fresh state there, as IdleMemoryRelease does).
 */
function run(cores: readonly number[], settings: IdleSettings = S, step = STEP): number[] {
  let at = 1_000;
  let cpu = 5_000_000;
  let state: IdleState = idleState({ at, cpu });
  const released: number[] = [];
  cores.forEach((c, i) => {
    at += step;
    cpu += Math.round(c * step * 1000);
    const r = idleStep(state, { at, cpu }, settings);
    state = r.state;
    if (r.release) {
      released.push(i);
      state = idleState({ at, cpu });
    }
  });
  return released;
}

const repeat = (c: number, n: number): number[] => Array.from({ length: n }, () => c);

describe("idleStep (when memory is released)", () => {
  it("never while idle from the start: no activity since start-up's release", () => {
    expect(run(repeat(0.001, 400))).toEqual([]);
    expect(run(repeat(0, 400))).toEqual([]);
  });

  it("once, a full idle window after a burst of load, and never again while idle", () => {
    // 10 steps (75 s) at 1.5 cores, then an hour idle with health probes (0.2 % of a core)
    const released = run([...repeat(1.5, 10), ...repeat(0.002, 480)]);
    // the window is 4 steps: the 4th idle step (index 13) completes it
    expect(released).toEqual([13]);
  });

  it("not before the window is idle in full, nor under steady load", () => {
    expect(run([...repeat(1, 10), ...repeat(0.001, 3)])).toEqual([]);
    expect(run(repeat(0.5, 400))).toEqual([]);
    // light but steady use above the idle fraction is not idle
    expect(run(repeat(0.03, 400))).toEqual([]);
  });

  it("once per idle period: each burst after idle gets its own release", () => {
    const burst = [...repeat(1, 4), ...repeat(0, 8)];
    expect(run([...burst, ...burst, ...burst])).toEqual([7, 19, 31]);
  });

  it("needs meaningful activity: below activityMicros of busy CPU time, no release", () => {
    // one 7.5 s step at 1 % of a core (75 ms) is below the idle fraction: not activity at all
    expect(run([0.01, ...repeat(0, 8)])).toEqual([]);
    // 0.1 core for one step: 750 ms busy, under 1 s
    expect(run([0.1, ...repeat(0, 8)])).toEqual([]);
    // twice that, in two bursts an idle window apart: 1.5 s in all, so the second idle period releases
    expect(run([0.1, ...repeat(0, 8), 0.1, ...repeat(0, 8)])).toEqual([13]);
  });

  it("CPU used while idle never adds up to activity (a long idle gets one release, not one per minutes)", () => {
    // 1.9 % of a core is idle; over an hour that is 68 s of CPU time, none of it counts
    expect(run([...repeat(1, 4), ...repeat(0.019, 480)])).toEqual([7]);
  });

  it("works on uneven sample times (a late timer): the window is measured, not counted", () => {
    let state = idleState({ at: 0, cpu: 0 });
    const feed = (s: CpuSample): boolean => {
      const r = idleStep(state, s, S);
      state = r.state;
      return r.release;
    };
    expect(feed({ at: 10_000, cpu: 8_000_000 })).toBe(false); // busy 10 s
    expect(feed({ at: 25_000, cpu: 8_100_000 })).toBe(false); // 15 s idle so far
    expect(feed({ at: 39_000, cpu: 8_150_000 })).toBe(false); // 29 s
    expect(feed({ at: 40_500, cpu: 8_160_000 })).toBe(true); // 30.5 s idle: 160 ms < 2 % of 30.5 s
    expect(state.busyMicros).toBe(0);
    // a sample list stays short: one at or before the window's start and the ones after it
    expect(state.samples.map((s) => s.at)).toEqual([10_000, 25_000, 39_000, 40_500]);
  });
});

describe("IdleMemoryRelease", () => {
  it("calls release once per idle period, restarts from a sample taken after it, and stops", () => {
    const samples: CpuSample[] = [];
    let at = 0;
    let cpu = 0;
    const next = (): CpuSample => {
      const s = { at, cpu };
      samples.push(s);
      return s;
    };
    let calls = 0;
    const idle = new IdleMemoryRelease(
      () => {
        calls++;
        cpu += 500_000; // the collections' own CPU time: must not count as activity
      },
      { windowMs: 1000, idleFraction: IDLE_FRACTION, activityMicros: ACTIVITY_MICROS },
      next,
    );
    try {
      const tick = (c: number): boolean => {
        at += 250;
        cpu += Math.round(c * 250_000);
        return idle.check();
      };
      const results = [...repeat(2, 4), ...repeat(0, 20)].map(tick);
      expect(calls).toBe(1);
      expect(results.indexOf(true)).toBe(7);
      // one sample per check, and one more right after the release
      expect(samples).toHaveLength(1 + 24 + 1);
    } finally {
      idle.stop();
    }
  });
});
