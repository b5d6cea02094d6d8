import { runInNewContext } from "node:vm";
import { releaseStartupMemory } from "../../src/metrics/memory";

describe("releaseStartupMemory", () => {
  it("collects this thread's heap and leaves no gc exposed anywhere", () => {
    const hadGc = typeof (globalThis as { gc?: unknown }).gc === "function";
    // garbage the young generation must hold until a collection
    let junk: unknown[] | undefined = Array.from({ length: 50_000 }, (_, i) => ({ i, s: `x${i}` }));
    expect(junk).toHaveLength(50_000);
    junk = undefined;
    const r = releaseStartupMemory();
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
    expect(releaseStartupMemory()).toBeDefined();
    expect(releaseStartupMemory()).toBeDefined();
    expect(runInNewContext("typeof gc")).toBe("undefined");
  });
});
