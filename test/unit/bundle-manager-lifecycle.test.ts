/**
 * The bundle manager as a component: stop() resolves only once the poll in
 * flight has finished, and no poll starts after it. A real BundleManager with
 * the committed reference bundle; its source (a collaborator) hands the
 * bundle out when the test says so.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BundleManager } from "../../src/bundles";
import type { BundleSource, Fetched } from "../../src/bundles/sources";
import { silentLogger } from "../../src/shared/log";
import { readTarGz } from "../../src/shared/tar";

const REFERENCE = join(__dirname, "..", "..", "bundles", "support-triage.tar.gz");

/** A source whose second and later downloads wait for `release()` (ignoring the abort, as a download that is already being read). */
class GatedSource implements BundleSource {
  readonly type = "http";
  readonly location = "https://bundles.example/support-triage.tar.gz";
  readonly persist = false;
  fetches = 0;
  private gate: (() => void) | undefined;
  private readonly bytes = readFileSync(REFERENCE);

  async fetch(): Promise<Fetched> {
    this.fetches++;
    if (this.fetches > 1) await new Promise<void>((resolve) => (this.gate = resolve));
    return { kind: "bundle", files: await readTarGz(this.bytes), name: "support-triage" };
  }
  get waiting(): boolean {
    return this.gate !== undefined;
  }
  release(): void {
    this.gate?.();
    this.gate = undefined;
  }
  nextDelayMs(): number {
    return 10;
  }
  reset(): void {}
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error("timed out");
}

test("stop() awaits the download in flight; nothing polls after it", async () => {
  const source = new GatedSource();
  const manager = new BundleManager({
    path: REFERENCE,
    entrypoint: "toolgate/decision",
    log: silentLogger,
    source,
  });
  expect(manager.component.status()).toEqual({
    state: "NOT_READY",
    detail: "no policy bundle is active",
  });
  await manager.component.start();
  expect(manager.component.status()).toEqual({ state: "OK" });
  await until(() => source.waiting); // the next poll's download is in flight

  let stopped = false;
  const stopping = manager.component.stop().then(() => (stopped = true));
  await new Promise((r) => setTimeout(r, 100));
  expect(stopped).toBe(false);
  source.release();
  await stopping;
  const activations = manager.status().last_successful_activation;
  await new Promise((r) => setTimeout(r, 100));
  expect(source.fetches).toBe(2);
  expect(manager.status().last_successful_activation).toBe(activations);
  expect(manager.component.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
});

test("stop() during start waits for the start, which then neither falls back nor schedules", async () => {
  const source = new GatedSource();
  source.fetches = 1; // the first download waits too
  const manager = new BundleManager({
    path: REFERENCE,
    entrypoint: "toolgate/decision",
    log: silentLogger,
    source,
  });
  const starting = manager.start();
  await until(() => source.waiting);
  const stopping = manager.stop();
  source.release();
  await Promise.all([starting, stopping]);
  await new Promise((r) => setTimeout(r, 100));
  expect(source.fetches).toBe(2);
});
