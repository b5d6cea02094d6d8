/**
 * Collaborators for the unit tests that construct a core unit directly
 * (Decider, Containment, ApprovalService, BundleManager, Identity): the real
 * reference policy behind a fake PolicySource, a tiny fake engine, a sink
 * and event receivers that collect, a clock and ids the test drives, and
 * principals as a verified token would give them.
 */
import { join } from "node:path";
import type { DatabaseSync } from "node:sqlite";
import type { PolicySource } from "../../src/decision";
import { isToolgateError, type ToolgateError } from "../../src/errors";
import type {
  AuditEvent,
  DecisionEvent,
  DecisionRequest,
  DecisionSink,
  Principal,
  RefusalEvent,
} from "../../src/model";
import { loadBundleFromPath } from "../../src/policy/bundle";
import { PolicyEngine } from "../../src/policy/engine";

const root = join(__dirname, "..", "..");

/** The committed reference bundle (the support-triage deployment). */
export const REFERENCE_BUNDLE = join(root, "bundles", "support-triage.tar.gz");
export const ENTRYPOINT = "toolgate/decision";
/** The agent the reference deployment serves. */
export const AGENT = "support-triage";

let reference: Promise<PolicyEngine> | undefined;

/** The reference bundle as a real PolicyEngine (instantiated once per test file). */
export function referenceEngine(): Promise<PolicyEngine> {
  reference ??= loadBundleFromPath(REFERENCE_BUNDLE).then((bundle) =>
    PolicyEngine.create(bundle, { entrypoint: ENTRYPOINT }),
  );
  return reference;
}

/** A PolicySource whose active engine the test sets (undefined: no policy). */
export class FixedPolicy implements PolicySource {
  constructor(public engine: PolicyEngine | undefined) {}
  active(): PolicyEngine | undefined {
    return this.engine;
  }
}

/** A stand-in PolicyEngine: answers what the test says and keeps the inputs it was given. */
export interface FakeEngine {
  readonly info: { bundle: string; revision: string; source: string };
  readonly entrypoint: string;
  readonly data: unknown;
  /** Every input evaluated, parsed. */
  readonly inputs: Array<{ request: DecisionRequest; verified: Record<string, unknown> }>;
  evaluateJson(inputJson: string, nowNs?: number): unknown;
}

/**
 * A tiny fake engine, for tests about something other than the policy:
 * `answer` is the entrypoint's value, or computes it from the input (and may
 * throw, as a failing evaluation does). `data` is its bundle's data document.
 */
export function fakeEngine(
  /** A value, or a function of the input (it may throw). */
  answer: unknown,
  opts: { bundle?: string; revision?: string; data?: unknown } = {},
): PolicyEngine & FakeEngine {
  const inputs: FakeEngine["inputs"] = [];
  const fake: FakeEngine = {
    info: {
      bundle: opts.bundle ?? "fake",
      revision: opts.revision ?? "fake-1",
      source: "fake.tar.gz",
    },
    entrypoint: ENTRYPOINT,
    data: opts.data,
    inputs,
    evaluateJson(inputJson: string): unknown {
      const input = JSON.parse(inputJson) as FakeEngine["inputs"][number];
      inputs.push(input);
      return typeof answer === "function"
        ? (answer as (input: { request: DecisionRequest }) => unknown)(input)
        : structuredClone(answer);
    },
  };
  // PolicyEngine is a class with private state: a fake stands in structurally
  return fake as unknown as PolicyEngine & FakeEngine;
}

/** A policy answer that meets the decision contract. */
export function answer(
  outcome: "allow" | "deny" | "needs_approval",
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    outcome,
    reasons: outcome === "allow" ? [] : [{ code: `fake_${outcome}`, message: `fake ${outcome}` }],
    obligations: [],
    ...(outcome === "needs_approval"
      ? {
          approval: {
            approver_roles: ["support_manager"],
            single_use: true,
            ttl_seconds: 900,
            exclude: [],
          },
        }
      : {}),
    ...extra,
  };
}

/** A DecisionSink that keeps every event it is given. */
export class CollectingSink implements DecisionSink {
  readonly events: AuditEvent[] = [];
  /** What overloaded() answers: set it to play audit past its backlog's bound. */
  full: string | undefined;
  record(event: AuditEvent): void {
    this.events.push(event);
  }
  overloaded(): string | undefined {
    return this.full;
  }
  decisions(): DecisionEvent[] {
    return this.events.filter((e): e is DecisionEvent => e.kind === "decision");
  }
  refusals(): RefusalEvent[] {
    return this.events.filter((e): e is RefusalEvent => e.kind === "refusal");
  }
}

/** Receives approval and containment events (ApprovalEvents, ContainmentEvents). */
export class CollectingEvents {
  readonly events: Array<{ event: string; fields: Record<string, unknown> }> = [];
  approvalEvent(event: string, fields: Record<string, unknown>): void {
    this.events.push({ event, fields });
  }
  containmentEvent(event: string, fields: Record<string, unknown>): void {
    this.events.push({ event, fields });
  }
  names(): string[] {
    return this.events.map((e) => e.event);
  }
}

/** A clock the test moves (epoch ms). */
export class FakeClock {
  constructor(public ms: number) {}
  readonly now = (): number => this.ms;
  advance(ms: number): number {
    this.ms += ms;
    return this.ms;
  }
}

/** Ids `${prefix}1`, `${prefix}2`, … */
export function sequentialIds(prefix = "dec_"): () => string {
  let n = 0;
  return () => `${prefix}${++n}`;
}

/** A decision request in the reference deployment's shape (alice, job_1 on cust_1). */
export function unitRequest(
  opts: {
    user?: string;
    tool?: string;
    args?: Record<string, unknown>;
    customer?: string;
    job?: string;
    context?: Record<string, unknown>;
  } = {},
): DecisionRequest {
  return {
    subject: { type: "user", id: opts.user ?? "alice" },
    action: {
      name: opts.tool ?? "tickets.read",
      ...(opts.args !== undefined ? { properties: { arguments: opts.args } } : {}),
    },
    resource: { type: "customer", id: opts.customer ?? "cust_1" },
    context: {
      job: { id: opts.job ?? "job_1", purpose: "support_triage", customer_id: "cust_1" },
      ...opts.context,
    },
  };
}

/** A caller as a verified token gives it (identity mode jwt). */
export function principal(id: string, roles: string[] = [], job?: string): Principal {
  return {
    id,
    roles,
    method: "jwt",
    ...(job !== undefined ? { job } : {}),
    claims: { iss: "toolgate-dev", sub: id, aud: "toolgate-agent", exp: 2_000_000_000 },
  };
}

/**
 * Makes real SQLite refuse every write on a store's own connections
 * (`PRAGMA query_only`; private fields, reached on purpose), or lifts it.
 */
export function refuseWrites(store: object, refuse: boolean): void {
  const conns = store as { db?: DatabaseSync; normal?: DatabaseSync };
  for (const db of new Set([conns.db, conns.normal])) {
    db?.exec(`PRAGMA query_only = ${refuse ? 1 : 0}`);
  }
}

/** The ToolgateError `f` throws (anything else is rethrown; no throw fails the test). */
export function refused(f: () => unknown): ToolgateError {
  try {
    f();
  } catch (e) {
    if (isToolgateError(e)) return e;
    throw e;
  }
  throw new Error("expected a ToolgateError");
}
