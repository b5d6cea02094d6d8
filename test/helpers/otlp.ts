import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A real OTLP/HTTP JSON receiver on loopback (POST /v1/traces), keeping what
 * it receives. `mode: "hang"` accepts requests and never answers, like a stuck
 * collector. `requests()`: how many requests have arrived (answered or not).
 */
export async function startOtlpReceiver(mode: "ok" | "hang" = "ok"): Promise<{
  url: string;
  bodies: unknown[];
  requests(): number;
  spans(): Array<{
    name: string;
    traceId: string;
    attributes: Array<{ key: string; value: Record<string, unknown> }>;
  }>;
  close(): Promise<void>;
}> {
  const bodies: unknown[] = [];
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (mode === "hang") return;
      try {
        bodies.push(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        bodies.push({ unparsed: true });
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    requests: () => requests,
    spans: () =>
      bodies.flatMap((b) =>
        (
          (b as { resourceSpans?: Array<{ scopeSpans: Array<{ spans: unknown[] }> }> })
            .resourceSpans ?? []
        ).flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)),
      ) as Array<{
        name: string;
        traceId: string;
        attributes: Array<{ key: string; value: Record<string, unknown> }>;
      }>,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
