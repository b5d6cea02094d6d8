/**
 * Attacks on `toolgate control` (real PostgreSQL, a fresh database; a real
 * replica on loopback; real dev-key-signed credentials): what a sidecar
 * credential of one agent can do to the service and to other agents.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { token } from "../helpers/tokens";

jest.setTimeout(60_000);

async function startReplica(
  url: string,
  streamLimits?: { perAgent?: number; total?: number },
): Promise<ControlService> {
  const stateDir = mkdtempSync(join(tmpdir(), "toolgate-control-attacks-"));
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      TOOLGATE_POSTGRES_URL: url,
    },
  );
  return startControlService(config, {
    log: silentLogger,
    env: { OTEL_SDK_DISABLED: "true" },
    replica: "attacks",
    pingMs: 250,
    ...(streamLimits !== undefined ? { streamLimits } : {}),
  });
}

/** A sidecar credential of `agent`, as a dev-mode sidecar mints it. */
function sidecar(agent: string): Promise<string> {
  return token(`agent:${agent}`, {
    audience: "toolgate-fleet",
    claims: { toolgate_agent: agent },
  });
}

interface OpenStream {
  status: number;
  body: string;
  close(): void;
}

/** Opens /fleet/v1/stream; for a 200 the body is left streaming (close() ends it). */
async function openStream(base: string, credential: string): Promise<OpenStream> {
  const abort = new AbortController();
  const res = await fetch(new URL("/fleet/v1/stream", base), {
    headers: { authorization: `Bearer ${credential}`, "x-toolgate-instance": "sc-x" },
    signal: abort.signal,
  });
  if (res.status !== 200) {
    const body = await res.text();
    return { status: res.status, body, close: () => abort.abort() };
  }
  // read the snapshot so the stream is surely registered
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const { value } = await reader.read();
  const body = new TextDecoder().decode(value);
  void (async () => {
    try {
      for (;;) if ((await reader.read()).done) return;
    } catch {
      // aborted
    }
  })();
  return { status: 200, body, close: () => abort.abort() };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("toolgate control under attack (a sidecar credential)", () => {
  let db: FreshDatabase;
  let svc: ControlService;
  const open: OpenStream[] = [];

  beforeAll(async () => {
    db = await freshDatabase();
    svc = await startReplica(db.url, { perAgent: 2, total: 3 });
  });
  afterAll(async () => {
    for (const s of open) s.close();
    await svc?.stop();
    await db?.drop();
  });

  test("one agent's credential cannot hold unbounded kill-switch streams (sockets, memory, snapshot reads): 429 fleet_stream_limit past its share, other agents keep theirs", async () => {
    const a = await sidecar("agent-a");
    const b = await sidecar("agent-b");
    const c = await sidecar("agent-c");
    const a1 = await openStream(svc.url, a);
    const a2 = await openStream(svc.url, a);
    open.push(a1, a2);
    expect([a1.status, a2.status]).toEqual([200, 200]);
    expect(a1.body).toContain("event: snapshot");
    const a3 = await openStream(svc.url, a);
    open.push(a3);
    expect(a3.status).toBe(429);
    expect(JSON.parse(a3.body)).toMatchObject({ code: "fleet_stream_limit" });
    // another agent still gets its stream …
    const b1 = await openStream(svc.url, b);
    open.push(b1);
    expect(b1.status).toBe(200);
    // … until the replica's total is reached
    const c1 = await openStream(svc.url, c);
    open.push(c1);
    expect(c1.status).toBe(429);
    // a stream that ends gives its place back
    a1.close();
    await until(
      () => svc.lifecycle.status().components.switch_stream?.detail?.startsWith("2 ") === true,
    );
    const a4 = await openStream(svc.url, a);
    open.push(a4);
    expect(a4.status).toBe(200);
  });
});
