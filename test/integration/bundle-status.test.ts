/**
 * Issue #13, item 13: /v1/status must not hide a file bundle that keeps being
 * refused. Real parts: a real toolgate watching a real bundle file, /v1/status
 * read over real HTTP on loopback, the committed reference bundle and
 * rewritten copies of it.
 */
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import type { BundleStatus } from "../../src/bundles";
import { rewriteBundle, until } from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { http, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

const REFERENCE = join(__dirname, "..", "..", "bundles", "support-triage.tar.gz");

async function statusOverHttp(tg: Toolgate): Promise<BundleStatus> {
  const res = await http(tg.agentServer.url, "GET", "/v1/status");
  expect(res.status).toBe(200);
  return (res.json as { bundles: BundleStatus[] }).bundles[0] as BundleStatus;
}

/** Reads /v1/status every 100 ms for `ms` (at least 10 watch intervals); returns every answer. */
async function pollStatus(tg: Toolgate, ms: number): Promise<BundleStatus[]> {
  const seen: BundleStatus[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    seen.push(await statusOverHttp(tg));
    await new Promise((r) => setTimeout(r, 100));
  }
  return seen;
}

describe("a watched file bundle that keeps being refused", () => {
  let tg: Toolgate;
  let path: string;

  beforeAll(async () => {
    path = join(tempDir("toolgate-status-"), "policy.tar.gz");
    copyFileSync(REFERENCE, path);
    tg = await startTestToolgate({
      TOOLGATE_BUNDLE: path,
      TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS: "100",
    });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test.each([
    [
      "a bundle whose data the reader refuses",
      () => rewriteBundle(REFERENCE, (m) => m.set("/data.json", Buffer.from("[]"))),
      "bundle_data_invalid",
    ],
    [
      "a file that is not a bundle at all",
      () => {
        const p = join(tempDir(), "garbage.tar.gz");
        writeFileSync(p, "garbage");
        return p;
      },
      "bundle_unreadable",
    ],
  ])(
    "%s: last_error stays (with its code) until a newer bundle activates, then clears",
    async (_what, make, code) => {
      const active = (await statusOverHttp(tg)).last_successful_activation;
      copyFileSync(await make(), path);
      await until(async () => (await statusOverHttp(tg)).last_error?.code === code);
      const first = (await statusOverHttp(tg)).last_error;
      // 3 s: thirty watch intervals; the refusal must be visible in every answer
      const seen = await pollStatus(tg, 3000);
      expect(seen.length).toBeGreaterThanOrEqual(10);
      for (const st of seen) {
        expect(st.last_error).toEqual(first);
        expect(st).toMatchObject({ state: "OK", last_successful_activation: active });
      }
      // a newer (good) bundle activates: the error clears
      copyFileSync(REFERENCE, path);
      await until(async () => (await statusOverHttp(tg)).last_successful_activation !== active);
      const after = await statusOverHttp(tg);
      expect(after).toMatchObject({ state: "OK", last_error: null, consecutive_failures: 0 });
    },
  );
});

test("booting with a refused file bundle: not ready, and the refusal stays in /v1/status", async () => {
  const path = join(tempDir("toolgate-status-"), "policy.tar.gz");
  copyFileSync(await rewriteBundle(REFERENCE, (m) => m.set("/data.json", Buffer.from("[]"))), path);
  const tg = await startTestToolgate({
    TOOLGATE_BUNDLE: path,
    TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS: "100",
  });
  try {
    const seen = await pollStatus(tg, 2000);
    for (const st of seen) {
      expect(st).toMatchObject({ state: "ERROR", revision: null });
      expect(st.last_error?.code).toBe("bundle_data_invalid");
    }
    expect((await http(tg.agentServer.url, "GET", "/health/ready")).status).toBe(503);
    copyFileSync(REFERENCE, path);
    await until(async () => (await statusOverHttp(tg)).state === "OK");
    expect((await statusOverHttp(tg)).last_error).toBeNull();
  } finally {
    await tg.stop();
  }
});
