/**
 * Nothing lost, nothing blocked: with the collector down or stuck, decisions
 * still succeed, the local trail still holds every one, and dropped spans are
 * counted and logged.
 */
import { verifyTrail } from "../../src/trail";
import { captureLogger } from "../helpers/capture";
import { startOtlpReceiver } from "../helpers/otlp";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { freePort } from "../helpers/net";

async function burst(base: string, n: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, (_, j) =>
        postJson(
          base,
          "/v1/decisions",
          refRequest({ tool: (i + j) % 2 ? "tickets.read" : "billing.update" }),
        ),
      ),
    );
    statuses.push(...batch.map((r) => r.status));
  }
  return statuses;
}

test.each([
  ["down (connection refused)", "down"],
  ["stuck (never answers)", "hang"],
] as const)(
  "collector %s: decisions succeed, the trail is complete, drops are counted",
  async (_name, mode) => {
    const stuck = mode === "hang" ? await startOtlpReceiver("hang") : undefined;
    const endpoint = stuck?.url ?? `http://127.0.0.1:${await freePort()}`;
    const logs = captureLogger();
    const tg = await startTestToolgate(
      { TOOLGATE_TRACING_MAX_QUEUE_SIZE: "32", TOOLGATE_TRACING_SCHEDULED_DELAY_MS: "10" },
      {
        otelEnv: {
          OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_EXPORTER_OTLP_TIMEOUT: "2000",
        },
        log: logs.log,
      },
    );
    try {
      const n = 400;
      const statuses = await burst(tg.agentServer.url, n);
      expect(statuses.every((s) => s === 200)).toBe(true);
      expect(statuses).toHaveLength(n);
      // audit runs on a worker thread: its counters arrive a moment later
      for (let i = 0; i < 200 && (tg.auditor?.tracingStats().dropped ?? 0) === 0; i++)
        await new Promise((r) => setTimeout(r, 50));
      // the queue is bounded: most of 400 spans cannot wait behind a 32-span queue
      // (read from the worker's report, not the counters the client starts with)
      const stats = tg.auditor?.tracingStats();
      expect(stats?.enabled).toBe(true);
      expect(stats?.queued).toBeLessThanOrEqual(32);
      expect(stats?.dropped).toBeGreaterThan(0);
      expect(logs.lines().some((l) => l.event === "audit.spans_dropped")).toBe(true);
    } finally {
      const dir = tg.config.audit.trail.dir;
      await tg.stop();
      await stuck?.close();
      const v = verifyTrail([dir]);
      expect(v.ok).toBe(true);
      // every decision is in the trail
      expect(v.records).toBe(400);
    }
  },
  60_000,
);
