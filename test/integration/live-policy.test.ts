/**
 * Live policy with real parts: a real HTTP bundle server on loopback (ETags,
 * 304s, failures), bundles built and signed by the real `opa`, a real OCI
 * registry, real toolgate instances over HTTP. No timing assertions: every
 * wait is "until the status says so" (bounded by jest's timeout).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import type { BundleStatus } from "../../src/bundles";
import { captureLogger } from "../helpers/capture";
import {
  BundleServer,
  fixtureBundle,
  keyPair,
  opaSign,
  rewriteBundle,
  until,
} from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { freePort } from "../helpers/net";

jest.setTimeout(120_000);

const status = (tg: Toolgate): BundleStatus => tg.bundles.status();
const decide = (tg: Toolgate) =>
  postJson(tg.agentServer.url, "/v1/decisions", refRequest({ tool: "tickets.read" }));

function httpEnv(url: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    TOOLGATE_CONTROL_PORT: "0",
    TOOLGATE_POLICY_SOURCE: "http",
    TOOLGATE_POLICY_HTTP_URL: url,
    TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS: "1",
    TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS: "1",
    TOOLGATE_POLICY_HTTP_TIMEOUT_MS: "2000",
    ...extra,
  };
}

describe("http source", () => {
  const server = new BundleServer();
  let tg: Toolgate;
  const cap = captureLogger();
  const activations = (): number =>
    cap.lines().filter((l) => l.event === "bundle.activated").length;

  beforeAll(async () => {
    server.publishFile(fixtureBundle("http-1"));
    await server.start();
    tg = await startTestToolgate(httpEnv(server.url, { TOOLGATE_POLICY_HTTP_TIMEOUT_MS: "500" }), {
      log: cap.log,
    });
  });
  afterAll(async () => {
    await tg.stop();
    await server.stop();
  });

  test("the first download is active at start; /health/ready and /v1/status on both ports say so", async () => {
    expect(tg.bundles.ready()).toBe(true);
    const ready = await http(tg.agentServer.url, "GET", "/health/ready");
    expect(ready.json).toMatchObject({ status: "ok", revision: "http-1", origin: "source" });
    const st = (await http(tg.agentServer.url, "GET", "/v1/status")).json as {
      bundles: BundleStatus[];
    };
    expect(st.bundles[0]).toMatchObject({
      source: server.url,
      source_type: "http",
      state: "OK",
      revision: "http-1",
      origin: "source",
      last_error: null,
      persisted: { in_use: false, revision: "http-1" },
    });
    expect(st.bundles[0]?.last_successful_download).toEqual(expect.any(String));
    expect(st.bundles[0]?.last_successful_activation).toEqual(expect.any(String));
    const ctl = await http(
      tg.controlServer!.url,
      "GET",
      "/v1/status",
      undefined,
      bearer(await token("ops", { roles: ["admin"] })),
    );
    expect(ctl.status).toBe(200);
    expect((ctl.json as { bundles: BundleStatus[] }).bundles[0]).toMatchObject({
      revision: "http-1",
      source: server.url,
    });
    expect((await decide(tg)).json).toMatchObject({ policy: { revision: "http-1" } });
  });

  test("304 keeps the active bundle: polls go on, nothing is downloaded or activated again", async () => {
    const served = server.served;
    const acts = activations();
    await until(() => server.notModified >= 2);
    expect(server.served).toBe(served);
    expect(activations()).toBe(acts);
    expect(status(tg).revision).toBe("http-1");
  });

  test("a new revision becomes active within the poll window", async () => {
    server.publishFile(fixtureBundle("http-2"));
    await until(() => status(tg).revision === "http-2");
    expect((await decide(tg)).json).toMatchObject({ policy: { revision: "http-2" } });
    expect(cap.lines().some((l) => l.event === "bundle.activated" && l.revision === "http-2")).toBe(
      true,
    );
  });

  test("500s: backoff, the active bundle is kept and keeps deciding; recovery afterwards", async () => {
    server.mode = "error";
    await until(() => status(tg).consecutive_failures >= 3);
    const st = status(tg);
    expect(st.last_error?.code).toBe("bundle_download_failed");
    expect(st.last_error?.message).toMatch(/HTTP 500/);
    expect(st).toMatchObject({ state: "OK", revision: "http-2" });
    expect((await decide(tg)).status).toBe(200);
    expect(
      cap.lines().some((l) => l.event === "bundle.rejected" && l.code === "bundle_download_failed"),
    ).toBe(true);
    server.mode = "ok";
    server.publishFile(fixtureBundle("http-3"));
    await until(() => status(tg).revision === "http-3");
    expect(status(tg)).toMatchObject({ consecutive_failures: 0, last_error: null });
  });

  test("a server that never answers: the request times out, the active bundle is kept", async () => {
    server.mode = "hang";
    await until(() => /timed out/.test(status(tg).last_error?.message ?? ""));
    expect(status(tg)).toMatchObject({ state: "OK", revision: "http-3" });
    expect((await decide(tg)).json).toMatchObject({ policy: { revision: "http-3" } });
    server.mode = "ok";
    await until(() => status(tg).consecutive_failures === 0);
  });

  test("a broken download (not a bundle) is rejected; the active bundle is kept", async () => {
    server.publish(Buffer.from("not a bundle at all"));
    await until(() => status(tg).last_error?.code === "bundle_unreadable");
    expect(status(tg).revision).toBe("http-3");
    server.publishFile(fixtureBundle("http-3"));
  });
});

test("response size limit: a larger download is aborted (bundle_too_large), nothing activates", async () => {
  const server = new BundleServer();
  server.publishFile(fixtureBundle("big-1"));
  await server.start();
  const tg = await startTestToolgate(
    httpEnv(server.url, { TOOLGATE_POLICY_HTTP_MAX_BYTES: "2048" }),
  );
  try {
    expect(tg.bundles.ready()).toBe(false);
    expect(status(tg).last_error?.code).toBe("bundle_too_large");
    expect((await decide(tg)).status).toBe(503);
  } finally {
    await tg.stop();
    await server.stop();
  }
});

test("bearer token: sent from the token file; a wrong one is a download failure", async () => {
  const server = new BundleServer();
  server.token = "s3cret-token";
  server.publishFile(fixtureBundle("tok-1"));
  await server.start();
  const dir = tempDir();
  writeFileSync(join(dir, "token"), "s3cret-token\n");
  writeFileSync(join(dir, "wrong"), "nope\n");
  const good = await startTestToolgate(
    httpEnv(server.url, { TOOLGATE_POLICY_HTTP_BEARER_TOKEN_FILE: join(dir, "token") }),
  );
  const bad = await startTestToolgate(
    httpEnv(server.url, { TOOLGATE_POLICY_HTTP_BEARER_TOKEN_FILE: join(dir, "wrong") }),
  );
  try {
    expect(status(good).revision).toBe("tok-1");
    expect(status(bad).last_error).toMatchObject({ code: "bundle_download_failed" });
    expect(JSON.stringify(status(bad))).not.toContain("nope");
  } finally {
    await good.stop();
    await bad.stop();
    await server.stop();
  }
});

describe("signed bundles (signed by the real opa sign): each refusal has its own code, the previous bundle stays", () => {
  const keys = keyPair("rsa");
  const stranger = keyPair("rsa");
  const server = new BundleServer();
  let tg: Toolgate;
  let good1: string;

  beforeAll(async () => {
    good1 = await opaSign(fixtureBundle("signed-1"), { key: keys.priv });
    server.publishFile(good1);
    await server.start();
    tg = await startTestToolgate(
      httpEnv(server.url, { TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE: keys.pub }),
    );
  });
  afterAll(async () => {
    await tg.stop();
    await server.stop();
  });

  test("a valid signature is accepted", () => {
    expect(status(tg)).toMatchObject({
      revision: "signed-1",
      signature_verification: true,
      last_error: null,
    });
  });

  const good2 = (): Promise<string> => opaSign(fixtureBundle("signed-2"), { key: keys.priv });
  const cases: Array<[string, () => string | Promise<string>, string]> = [
    ["an unsigned bundle", () => fixtureBundle("signed-2"), "bundle_unsigned"],
    [
      "a tampered data.json",
      async () =>
        rewriteBundle(await good2(), (m) =>
          m.set("/data.json", Buffer.from('{"fixture":{"note":"evil"}}')),
        ),
      "bundle_digest_mismatch",
    ],
    [
      "an added file",
      async () => rewriteBundle(await good2(), (m) => m.set("/extra/data.json", Buffer.from("{}"))),
      "bundle_files_mismatch",
    ],
    [
      "a removed file",
      async () => rewriteBundle(await good2(), (m) => m.delete("/data.json")),
      "bundle_files_mismatch",
    ],
    [
      "a wrong key",
      () => opaSign(fixtureBundle("signed-2"), { key: stranger.priv }),
      "bundle_signature_invalid",
    ],
    [
      "a wrong scope",
      () => opaSign(fixtureBundle("signed-2"), { key: keys.priv, claims: { scope: "other-env" } }),
      "bundle_scope_mismatch",
    ],
  ];
  test.each(cases.map(([what, make, code]) => [what, code, make] as const))(
    "%s → %s",
    async (what, code, make) => {
      server.publishFile(await make());
      await until(() => status(tg).last_error?.code === code);
      expect(status(tg)).toMatchObject({ state: "OK", revision: "signed-1" });
      expect((await decide(tg)).json).toMatchObject({ policy: { revision: "signed-1" } });
      // restore the good bundle so the next case starts from a clean status
      server.publishFile(good1);
      await until(() => status(tg).last_error === null);
      void what;
    },
  );

  test("a properly signed new revision is then accepted", async () => {
    server.publishFile(await good2());
    await until(() => status(tg).revision === "signed-2");
  });
});

test("swap under load: 2,400 decisions while the revision changes 4 times → zero failures, only active revisions", async () => {
  const server = new BundleServer();
  const revisions = ["load-1", "load-2", "load-3", "load-4", "load-5"];
  const bundles = revisions.map((r) => fixtureBundle(r));
  server.publishFile(bundles[0]!);
  await server.start();
  const tg = await startTestToolgate(httpEnv(server.url));
  const seen = new Map<string, number>();
  let failures = 0;
  let total = 0;
  let publishing = true;
  const publisher = (async () => {
    for (let i = 1; i < revisions.length; i++) {
      server.publishFile(bundles[i]!);
      await until(() => status(tg).revision === revisions[i]);
    }
    publishing = false;
  })();
  try {
    while (publishing || total < 2400) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => decide(tg)));
      for (const r of batch) {
        total++;
        if (r.status !== 200) failures++;
        const rev = (r.json as { policy?: { revision?: string } }).policy?.revision ?? "none";
        seen.set(rev, (seen.get(rev) ?? 0) + 1);
      }
    }
    await publisher;
    expect(failures).toBe(0);
    expect(total).toBeGreaterThanOrEqual(2400);
    for (const rev of seen.keys()) expect(revisions).toContain(rev);
    expect(seen.size).toBeGreaterThanOrEqual(2);
  } finally {
    await tg.stop();
    await server.stop();
  }
});

describe("last-known-good", () => {
  test("restart with the bundle server down: the persisted bundle is active and ready", async () => {
    const keys = keyPair("rsa");
    const server = new BundleServer();
    server.publishFile(await opaSign(fixtureBundle("lkg-1"), { key: keys.priv }));
    await server.start();
    const stateDir = mkdtempSync(join(tmpdir(), "toolgate-state-"));
    const env = httpEnv(server.url, {
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE: keys.pub,
    });
    const first = await startTestToolgate(env);
    expect(status(first)).toMatchObject({ revision: "lkg-1", origin: "source" });
    await first.stop();
    await server.stop();

    const second = await startTestToolgate(env);
    try {
      expect(second.bundles.ready()).toBe(true);
      expect(status(second)).toMatchObject({
        revision: "lkg-1",
        origin: "persisted",
        persisted: { in_use: true, revision: "lkg-1" },
        last_error: { code: "bundle_download_failed" },
      });
      const ready = await http(second.agentServer.url, "GET", "/health/ready");
      expect(ready.status).toBe(200);
      expect(ready.json).toMatchObject({ revision: "lkg-1", origin: "persisted" });
      expect((await decide(second)).json).toMatchObject({ policy: { revision: "lkg-1" } });
    } finally {
      await second.stop();
    }

    // the persisted copy is verified again at boot: another key → not ready
    const other = keyPair("rsa");
    const third = await startTestToolgate({
      ...env,
      TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE: other.pub,
    });
    try {
      expect(third.bundles.ready()).toBe(false);
      expect(status(third).last_error?.code).toBe("bundle_signature_invalid");
      expect((await http(third.agentServer.url, "GET", "/health/ready")).status).toBe(503);
    } finally {
      await third.stop();
    }
  });
});

test("file source: a changed file is reloaded; a broken one is refused and the active one kept", async () => {
  const dir = tempDir();
  const path = join(dir, "policy.tar.gz");
  copyFileSync(fixtureBundle("file-1"), path);
  const cap = captureLogger();
  const tg = await startTestToolgate(
    {
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_BUNDLE: path,
      TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS: "100",
    },
    { log: cap.log },
  );
  try {
    expect(status(tg)).toMatchObject({ revision: "file-1", source_type: "file", persisted: null });
    copyFileSync(fixtureBundle("file-2"), path);
    await until(() => status(tg).revision === "file-2");
    writeFileSync(path, "garbage");
    await until(() => status(tg).last_error?.code === "bundle_unreadable");
    expect(status(tg).revision).toBe("file-2");
    expect((await decide(tg)).json).toMatchObject({ policy: { revision: "file-2" } });
  } finally {
    await tg.stop();
  }
});

// ---- OCI: a real registry (go-containerregistry's, pinned in scripts/tools.sh) ----

async function pushBlob(base: string, repo: string, body: Buffer): Promise<string> {
  const digest = "sha256:" + createHash("sha256").update(body).digest("hex");
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  expect(start.status).toBe(202);
  const loc = new URL(start.headers.get("location") as string, base);
  loc.searchParams.set("digest", digest);
  const put = await fetch(loc, {
    method: "PUT",
    body,
    headers: { "content-type": "application/octet-stream" },
  });
  expect(put.status).toBe(201);
  return digest;
}

async function pushBundle(base: string, repo: string, tag: string, bundle: Buffer): Promise<void> {
  const config = Buffer.from("{}");
  const configDigest = await pushBlob(base, repo, config);
  const layerDigest = await pushBlob(base, repo, bundle);
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: configDigest,
      size: config.length,
    },
    layers: [
      {
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: layerDigest,
        size: bundle.length,
        annotations: { "org.opencontainers.image.title": "bundle.tar.gz" },
      },
    ],
  };
  const res = await fetch(`${base}/v2/${repo}/manifests/${tag}`, {
    method: "PUT",
    body: JSON.stringify(manifest),
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
  });
  expect(res.status).toBe(201);
}

test("oci source: a bundle pushed to a real registry on loopback is pulled, and a new push swapped in", async () => {
  const { execFileSync } = await import("node:child_process");
  const registry = execFileSync(
    "bash",
    [join(__dirname, "..", "..", "scripts", "tools.sh"), "registry"],
    {
      encoding: "utf8",
    },
  ).trim();
  const port = await freePort();
  const proc: ChildProcess = spawn(registry, ["-port", String(port)], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  let tg: Toolgate | undefined;
  try {
    await until(async () => (await fetch(`${base}/v2/`).catch(() => undefined))?.status === 200);
    await pushBundle(base, "policies/triage", "live", readFileSync(fixtureBundle("oci-1")));
    tg = await startTestToolgate({
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_POLICY_SOURCE: "oci",
      TOOLGATE_POLICY_OCI_REFERENCE: `127.0.0.1:${port}/policies/triage:live`,
      TOOLGATE_POLICY_OCI_PLAIN_HTTP: "true",
      TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS: "1",
      TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS: "1",
    });
    const t = tg;
    expect(status(t)).toMatchObject({
      revision: "oci-1",
      source_type: "oci",
      source: `oci://127.0.0.1:${port}/policies/triage:live`,
    });
    expect(status(t).etag).toMatch(/^sha256:/);
    await pushBundle(base, "policies/triage", "live", readFileSync(fixtureBundle("oci-2")));
    await until(() => status(t).revision === "oci-2");
    expect((await decide(t)).json).toMatchObject({ policy: { revision: "oci-2" } });
  } finally {
    await tg?.stop();
    proc.kill();
  }
});
