/**
 * The BundleManager on its own: a real manager on a real FileSource reading a
 * bundle file in a temp dir (not watched: the test polls), real bundles (the
 * committed reference bundle, fixtures built by the real `opa build`), and
 * collaborators that collect (the log, the metrics hook, the span hook) or
 * refuse as the test says (the smoke test). Activation, a refusal that keeps
 * the active bundle, the last error kept until a newer bundle activates, the
 * status in OPA's plugin states, and stop with a poll in flight. Stop with a
 * download in flight (and during start) is in bundle-manager-lifecycle.test.ts.
 */
import { copyFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Attributes } from "@opentelemetry/api";
import { BundleManager } from "../../src/bundles";
import { FileSource } from "../../src/bundles/sources";
import { toolgateError } from "../../src/errors";
import type { PolicyEngine } from "../../src/policy/engine";
import { fixtureBundle, fixturePolicy } from "../helpers/bundles";
import { captureLogger } from "../helpers/capture";
import { buildWasmBundle, tempDir } from "../helpers/opa";
import { ENTRYPOINT, REFERENCE_BUNDLE, referenceEngine } from "../helpers/units";

/** Puts `src` at `path` in one rename (a new file, as a deploy writes it). */
function install(path: string, src: string | Buffer): void {
  const tmp = `${path}.tmp`;
  if (typeof src === "string") copyFileSync(src, tmp);
  else writeFileSync(tmp, src);
  renameSync(tmp, path);
}

interface Unit {
  manager: BundleManager;
  path: string;
  events: string[];
  spans: Array<{ name: string; attributes: Attributes; error: string | undefined }>;
  lines: () => Array<Record<string, unknown>>;
}

const managers: BundleManager[] = [];
function unit(
  first: string | Buffer | undefined,
  opts: { smokeTest?: (engine: PolicyEngine) => void; debounceMs?: number } = {},
): Unit {
  const path = join(tempDir("toolgate-bundles-"), "support-triage.tar.gz");
  if (first !== undefined) install(path, first);
  const events: string[] = [];
  const spans: Unit["spans"] = [];
  const { log, lines } = captureLogger();
  const manager = new BundleManager({
    path,
    entrypoint: ENTRYPOINT,
    log,
    source: new FileSource(path, 0, opts.debounceMs ?? 0),
    onEvent: (result, code) => events.push(code === undefined ? result : `${result} ${code}`),
    spans: { bundleSpan: (name, attributes, error) => spans.push({ name, attributes, error }) },
    ...(opts.smokeTest ? { smokeTest: opts.smokeTest } : {}),
  });
  managers.push(manager);
  return { manager, path, events, spans, lines };
}
afterAll(async () => {
  for (const m of managers) await m.stop();
});

const GARBAGE = Buffer.from("this is not a gzip archive");
let referenceRevision: string;
beforeAll(async () => {
  referenceRevision = (await referenceEngine()).info.revision;
});

test("activation: NOT_READY, then OK with the bundle's revision; a newer bundle replaces it", async () => {
  const u = unit(REFERENCE_BUNDLE);
  const m = u.manager;
  expect(m.active()).toBeUndefined();
  expect(m.ready()).toBe(false);
  expect(m.status()).toMatchObject({
    state: "NOT_READY",
    revision: null,
    activated_at: null,
    source: u.path,
    source_type: "file",
    last_error: null,
  });
  expect(m.component.status()).toEqual({
    state: "NOT_READY",
    detail: "no policy bundle is active",
  });

  await m.component.start();
  const first = m.active();
  expect(first?.info).toEqual({
    bundle: "support-triage",
    revision: referenceRevision,
    source: u.path,
  });
  expect(m.status()).toMatchObject({
    name: "support-triage",
    state: "OK",
    revision: referenceRevision,
    origin: "source",
    consecutive_failures: 0,
    signature_verification: false,
    persisted: null,
    last_error: null,
  });
  expect(m.status().activated_at).toEqual(expect.any(String));
  expect(m.component.status()).toEqual({ state: "OK" });

  install(u.path, fixtureBundle("fixture-2"));
  await m.poll();
  expect(m.active()).not.toBe(first);
  expect(m.status()).toMatchObject({ state: "OK", revision: "fixture-2", last_error: null });
  // the file has not changed since: nothing to do
  const active = m.active();
  await m.poll();
  expect(m.active()).toBe(active);

  expect(u.events).toEqual(["activated", "activated"]);
  expect(u.spans.map((s) => [s.name, s.attributes["toolgate.bundle.revision"], s.error])).toEqual([
    ["toolgate.bundle activate", referenceRevision, undefined],
    ["toolgate.bundle activate", "fixture-2", undefined],
  ]);
  expect(u.lines().filter((l) => l.event === "bundle.activated")).toHaveLength(2);
});

test("a refused bundle keeps the active one; its error stays until a newer bundle activates", async () => {
  const u = unit(REFERENCE_BUNDLE);
  const m = u.manager;
  await m.start();
  const engine = m.active();

  install(u.path, GARBAGE);
  await m.poll();
  expect(m.active()).toBe(engine);
  const refused = m.status();
  expect(refused).toMatchObject({
    state: "OK",
    revision: referenceRevision,
    consecutive_failures: 1,
    last_error: { code: "bundle_unreadable" },
  });
  const message = refused.last_error?.message ?? "";
  expect(m.component.status()).toEqual({ state: "OK", detail: message });
  expect(u.lines().filter((l) => l.event === "bundle.rejected")).toEqual([
    expect.objectContaining({
      code: "bundle_unreadable",
      source: u.path,
      active_revision: referenceRevision,
    }),
  ]);

  // the source still holds what was refused: the refusal stays visible
  await m.poll();
  expect(m.status().last_error).toEqual(refused.last_error);
  expect(m.status().consecutive_failures).toBe(1);

  // another refusal (the wasm lacks the entrypoint) replaces it
  install(
    u.path,
    buildWasmBundle(fixturePolicy(), {
      entrypoints: ["toolgate/decision/outcome"],
      revision: "r3",
    }),
  );
  await m.poll();
  expect(m.active()).toBe(engine);
  expect(m.status()).toMatchObject({
    revision: referenceRevision,
    consecutive_failures: 2,
    last_error: { code: "entrypoint_missing" },
  });

  install(u.path, fixtureBundle("fixture-4"));
  await m.poll();
  expect(m.status()).toMatchObject({
    state: "OK",
    revision: "fixture-4",
    consecutive_failures: 0,
    last_error: null,
  });
  expect(m.component.status()).toEqual({ state: "OK" });
  expect(u.events).toEqual([
    "activated",
    "rejected bundle_unreadable",
    "rejected entrypoint_missing",
    "activated",
  ]);
  expect(u.spans.map((s) => [s.name, s.attributes["toolgate.error.code"] ?? null])).toEqual([
    ["toolgate.bundle activate", null],
    ["toolgate.bundle reject", "bundle_unreadable"],
    ["toolgate.bundle reject", "entrypoint_missing"],
    ["toolgate.bundle activate", null],
  ]);
});

test("a bundle the smoke test refuses is not activated", async () => {
  const u = unit(REFERENCE_BUNDLE, {
    smokeTest: (engine) => {
      if (engine.info.revision === "refuse-me")
        throw toolgateError("policy_output_invalid", "the smoke test says no");
    },
  });
  await u.manager.start();
  install(u.path, fixtureBundle("refuse-me"));
  await u.manager.poll();
  expect(u.manager.status()).toMatchObject({
    state: "OK",
    revision: referenceRevision,
    last_error: { code: "policy_output_invalid", message: "the smoke test says no" },
  });
});

test("nothing ever activated: ERROR with the reason, and no policy; a good bundle makes it OK", async () => {
  const u = unit(undefined);
  const m = u.manager;
  await m.start();
  expect(m.active()).toBeUndefined();
  expect(m.status()).toMatchObject({
    state: "ERROR",
    revision: null,
    consecutive_failures: 1,
    last_error: { code: "bundle_not_found" },
  });
  expect(m.component.status()).toEqual({
    state: "ERROR",
    detail: m.status().last_error?.message,
  });

  install(u.path, GARBAGE);
  await m.poll();
  expect(m.status()).toMatchObject({ state: "ERROR", last_error: { code: "bundle_unreadable" } });

  install(u.path, REFERENCE_BUNDLE);
  await m.poll();
  expect(m.status()).toMatchObject({ state: "OK", revision: referenceRevision, last_error: null });

  // removed afterwards: the active bundle keeps serving, the error is the detail
  rmSync(u.path);
  await m.poll();
  expect(m.status()).toMatchObject({ state: "OK", last_error: { code: "bundle_not_found" } });
  expect(m.component.status().state).toBe("OK");
});

test("stop() awaits the poll in flight; nothing is activated after it", async () => {
  // the file source waits (debounce) before reading a changed file: the poll is in flight
  const u = unit(REFERENCE_BUNDLE, { debounceMs: 20 });
  const m = u.manager;
  await m.start();
  install(u.path, fixtureBundle("fixture-5"));
  const order: string[] = [];
  const polling = m.poll().then(() => order.push("poll"));
  const stopping = m.component.stop().then(() => order.push("stop"));
  await Promise.all([polling, stopping]);
  expect(order).toEqual(["poll", "stop"]);
  expect(m.status().revision).toBe(referenceRevision);
  expect(m.status().last_error).toBeNull();
  await m.poll();
  expect(m.status().revision).toBe(referenceRevision);
  expect(m.component.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
  expect(u.events).toEqual(["activated"]);
});
