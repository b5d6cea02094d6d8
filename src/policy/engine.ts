import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadPolicySync, type LoadedPolicy } from "@open-policy-agent/opa-wasm";
import { normalizeError, toolgateError, rethrowAs } from "../errors";
import { describeForbiddenKey, forbiddenKey } from "../shared/guards";
import type { Bundle } from "./bundle";
import { hostBuiltins, TIME_BUILTINS } from "./builtins";

/**
 * Builtins toolgate implements on top of what opa-wasm provides (time.now_ns
 * here, the calendar functions in ./builtins). Rego's capabilities file
 * (rego/capabilities.json) lists exactly opa-wasm's set plus these, so a
 * policy needing anything else fails at `opa build`.
 */
export const TOOLGATE_BUILTINS = ["time.now_ns", ...TIME_BUILTINS] as const;

/** WebAssembly as node offers it (./wasm.d.ts declares only what the engine reads). */
const wasmApi: unknown = WebAssembly;

let supported: Set<string> | undefined;
/** Every builtin name a bundle may need at run time. */
export function supportedBuiltins(): Set<string> {
  if (supported === undefined) {
    const pkgDir = dirname(dirname(require.resolve("@open-policy-agent/opa-wasm")));
    const caps = JSON.parse(readFileSync(join(pkgDir, "capabilities.json"), "utf8")) as {
      builtins: Array<{ name: string }>;
    };
    supported = new Set([...caps.builtins.map((b) => b.name), ...TOOLGATE_BUILTINS]);
  }
  return supported;
}

export interface EngineOptions {
  /** The wasm entrypoint toolgate asks for a decision, e.g. "toolgate/decision". */
  entrypoint: string;
  /** Clock for time.now_ns, in nanoseconds since the epoch. */
  nowNs?: () => number;
  /** Upper bound on wasm memory, in 64 KiB pages. */
  maxMemoryPages?: number;
  /**
   * OPA's strict-builtin-errors for the host builtins: a builtin error fails
   * the evaluation (policy_evaluation_failed, so the decision denies) instead
   * of leaving the expression undefined (OPA's default, and toolgate's).
   */
  strictBuiltinErrors?: boolean;
}

export interface PolicyInfo {
  bundle: string;
  revision: string;
  source: string;
}

const encoder = new TextEncoder();

interface WasmExports {
  builtins(): number;
  opa_json_dump(addr: number): number;
  /** ABI 1.2's one-call evaluation (present in every current OPA build). */
  opa_eval?(
    reserved: number,
    entrypoint: number,
    data: number,
    input: number,
    inputLen: number,
    heapPtr: number,
    format: number,
  ): number;
}

/** The LoadedPolicy fields the fast path reads (public in opa-wasm's typings). */
interface PolicyInternals {
  mem: WebAssembly.Memory;
  dataAddr: number;
  dataHeapPtr: number;
  minorVersion: number | undefined;
}

function readCString(mem: WebAssembly.Memory, addr: number): string {
  const bytes = new Uint8Array(mem.buffer);
  let end = addr;
  while (bytes[end] !== 0 && end < bytes.length) end++;
  return Buffer.from(bytes.subarray(addr, end)).toString("utf8");
}

/**
 * One instantiated policy: a bundle's wasm module with the bundle's data set.
 * Knows nothing of HTTP, identity or storage: JSON in, JSON value out.
 */
export class PolicyEngine {
  readonly info: PolicyInfo;
  readonly entrypoint: string;
  /** The bundle's data document (read-only; e.g. containment reads `toolgate.deployment.limits`). */
  readonly data: unknown;
  private readonly policy: LoadedPolicy;
  private readonly nowNs: () => number;
  private evalNowNs = 0;
  /** The entrypoint's id when the module offers ABI 1.2's opa_eval. */
  private fastEntrypoint: number | undefined;
  /** Whether the last output text may hold a forbidden key (false: its text names none). */
  private mayHoldForbiddenKey = true;

  private constructor(
    info: PolicyInfo,
    entrypoint: string,
    policy: LoadedPolicy,
    nowNs: () => number,
    data: unknown = undefined,
  ) {
    this.data = data;
    this.info = info;
    this.entrypoint = entrypoint;
    this.policy = policy;
    this.nowNs = nowNs;
  }

  /** Instantiates a bundle's wasm for `entrypoint`, sets its data and checks its builtins. */
  static async create(bundle: Bundle, opts: EngineOptions): Promise<PolicyEngine> {
    const entry = bundle.manifest.wasm.find((w) => w.entrypoint === opts.entrypoint);
    if (entry === undefined) {
      throw toolgateError(
        "entrypoint_missing",
        `bundle ${bundle.name} has no wasm entrypoint "${opts.entrypoint}" in its manifest (has: ${
          bundle.manifest.wasm.map((w) => w.entrypoint).join(", ") || "none"
        })`,
      );
    }
    const wasm = bundle.files.get(entry.module) as Buffer;
    const nowNs = opts.nowNs ?? (() => Date.now() * 1e6);
    // The builtin must read the per-evaluation time, so it closes over a holder
    // that the engine fills in before each evaluation.
    const holder: { engine?: PolicyEngine } = {};
    let policy: LoadedPolicy;
    try {
      // Compiled off this thread, then instantiated with loadPolicySync: opa-wasm's
      // async loadPolicy tests its argument with `instanceof Response`, and the
      // first touch of that global makes node load its fetch implementation
      // (undici: up to ~15 MB resident in a bare node, which the engine never needs; #20).
      const compiled = await (
        wasmApi as { compile(b: Uint8Array): Promise<WebAssembly.Module> }
      ).compile(new Uint8Array(wasm));
      policy = loadPolicySync(
        compiled,
        { initial: 5, maximum: opts.maxMemoryPages ?? 2048 },
        {
          ...hostBuiltins({ strict: opts.strictBuiltinErrors === true }),
          "time.now_ns": () => holder.engine?.evalNowNs ?? nowNs(),
        },
      );
    } catch (e) {
      throw toolgateError("wasm_invalid", `bundle ${bundle.name}: ${normalizeError(e).message}`, {
        cause: e,
      });
    }
    const entrypoints = policy.entrypoints as Record<string, number>;
    if (!Object.prototype.hasOwnProperty.call(entrypoints, opts.entrypoint)) {
      throw toolgateError(
        "entrypoint_missing",
        `bundle ${bundle.name}: policy.wasm does not export entrypoint "${opts.entrypoint}"`,
      );
    }
    // Refuse at load time a module that would need a builtin nobody implements.
    const instance = (policy.wasmInstance as WebAssembly.Instance)
      .exports as unknown as WasmExports;
    const needed = Object.keys(
      JSON.parse(readCString(policy.mem, instance.opa_json_dump(instance.builtins()))) as Record<
        string,
        number
      >,
    );
    const missing = needed.filter((b) => !supportedBuiltins().has(b));
    if (missing.length > 0) {
      throw toolgateError(
        "wasm_invalid",
        `bundle ${bundle.name} needs builtins toolgate does not implement: ${missing.join(", ")}`,
      );
    }
    rethrowAs("wasm_invalid", `bundle ${bundle.name}: cannot set data`, () =>
      policy.setData(bundle.data),
    );
    const engine = new PolicyEngine(
      { bundle: bundle.name, revision: bundle.manifest.revision, source: bundle.source },
      opts.entrypoint,
      policy,
      nowNs,
      bundle.data,
    );
    holder.engine = engine;
    const internals = policy as unknown as PolicyInternals;
    if (typeof instance.opa_eval === "function" && (internals.minorVersion ?? 0) >= 2) {
      engine.fastEntrypoint = entrypoints[opts.entrypoint];
    }
    return engine;
  }

  /**
   * Evaluates the entrypoint on an input given as JSON text. Returns the
   * entrypoint's value, or undefined when the policy leaves it undefined.
   * Throws a `policy_evaluation_failed` ToolgateError on any failure.
   *
   * The input is handed over as bytes: that skips a stringify/parse round
   * trip and sidesteps opa-wasm treating falsy inputs (false, 0, "", null) as
   * "no input". For the engine's own entrypoint on a module with ABI 1.2's
   * opa_eval, the bytes are written straight into wasm memory (evaluateFast);
   * otherwise they go through opa-wasm's evaluate().
   */
  evaluateJson(
    inputJson: string,
    nowNs: number = this.nowNs(),
    entrypoint: string = this.entrypoint,
  ): unknown {
    this.evalNowNs = nowNs;
    this.mayHoldForbiddenKey = true;
    let rs: unknown;
    try {
      rs =
        this.fastEntrypoint !== undefined && entrypoint === this.entrypoint
          ? this.evaluateFast(inputJson, this.fastEntrypoint)
          : this.policy.evaluate(encoder.encode(inputJson).buffer, entrypoint);
    } catch (e) {
      throw normalizeError(e, "policy_evaluation_failed");
    }
    if (!Array.isArray(rs) || rs.length === 0) return undefined;
    if (rs.length > 1) {
      throw toolgateError("policy_evaluation_failed", "entrypoint produced more than one result");
    }
    const first: unknown = rs[0];
    if (first === null || typeof first !== "object" || !Object.hasOwn(first, "result"))
      return undefined;
    const result = (first as { result: unknown }).result;
    // The output comes from the bundle: like its data, it may not carry a key
    // that reaches a prototype (the decision path copies parts of it on).
    if (this.mayHoldForbiddenKey) {
      const hit = forbiddenKey(result);
      if (hit !== undefined) {
        throw toolgateError(
          "policy_evaluation_failed",
          `the policy output holds a ${describeForbiddenKey(hit)}`,
        );
      }
    }
    return result;
  }

  /**
   * opa-wasm's own evaluate(), minus two copies: the input is encoded straight
   * into wasm memory (encodeInto) and the result string is found with indexOf
   * instead of a byte-by-byte JS loop. Same ABI call (opa_eval), same result.
   */
  private evaluateFast(inputJson: string, entrypointId: number): unknown {
    const p = this.policy as unknown as PolicyInternals;
    const exports = (this.policy.wasmInstance as WebAssembly.Instance)
      .exports as unknown as WasmExports;
    const addr = p.dataHeapPtr;
    let mem = new Uint8Array(p.mem.buffer);
    const worstCase = addr + inputJson.length * 3 - mem.byteLength;
    if (worstCase > 0) {
      p.mem.grow(Math.ceil(worstCase / 65536)); // throws past the memory maximum → deny
      mem = new Uint8Array(p.mem.buffer);
    }
    const { written } = encoder.encodeInto(inputJson, mem.subarray(addr));
    const ret = (exports.opa_eval as NonNullable<WasmExports["opa_eval"]>)(
      0,
      entrypointId,
      p.dataAddr,
      addr,
      written,
      addr + written,
      0,
    );
    mem = new Uint8Array(p.mem.buffer); // evaluation may have grown memory
    const end = mem.indexOf(0, ret);
    if (ret === 0 || end < 0)
      throw toolgateError("policy_evaluation_failed", "opa_eval returned no result");
    const text = Buffer.from(mem.buffer, ret, end - ret).toString("utf8");
    // a key needs its name in the text (or an escape spelling it): skip the walk
    // when none appears ("proto" covers __proto__ and prototype); ~0.15 µs
    this.mayHoldForbiddenKey =
      text.includes("proto") || text.includes("constructor") || text.includes("\\u");
    return JSON.parse(text);
  }

  /** The entrypoints the wasm module exports. */
  get entrypoints(): string[] {
    return Object.keys(this.policy.entrypoints as Record<string, number>);
  }
}
