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
 * Gives back to the OS what start-up used and no longer needs: one full,
 * memory-reducing garbage collection of this thread's heap (V8's
 * "last resort" collection, what it runs under memory pressure).
 *
 * Start-up allocates fast (modules, the bundle, the wasm compile, the smoke
 * test), so V8 grows the young generation to its maximum (16 MB semi-spaces,
 * ~23 MB resident) and keeps it: a sidecar that then idles would hold it
 * forever (V8's memory reducer does not shrink it while the process idles).
 * This collection shrinks the young generation back to its initial size and
 * releases the heap's free pages: ~25 MB of idle RSS in `toolgate serve`.
 * Under load the young generation grows again as before (the collection does
 * not change any heap limit or V8 flag, so throughput is unchanged); run it
 * once, when start-up is done, not on a request path (it pauses this thread
 * for some tens of milliseconds). Returns undefined when no gc is available.
 */
export function releaseStartupMemory(): MemoryRelease | undefined {
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
