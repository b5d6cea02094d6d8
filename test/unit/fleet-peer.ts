/**
 * A PROTOCOL PEER for the sidecar's fleet client tests: a small HTTP server
 * that speaks the control service's sidecar API (/fleet/v1, the fleet
 * design's wire protocol) from memory, with knobs to misbehave. It is NOT the
 * control service (src/control): no PostgreSQL, no checks beyond what a test
 * needs; every request is logged so a test can look at what the sidecar sent.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface PeerRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: unknown;
}

export type PeerAnswer = { status: number; body: unknown } | "hang" | "drop";
export type PeerHandler = (body: unknown, req: PeerRequest) => PeerAnswer;

export interface SwitchWire {
  id: string;
  scope: Record<string, string>;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  persisted: true;
  deleted_at?: string | null;
  deleted_by?: string | null;
}

export function switchWire(id: string, scope: Record<string, string>, reason = "test"): SwitchWire {
  return {
    id,
    scope,
    reason,
    created_by: "olga",
    created_at: new Date().toISOString(),
    expires_at: null,
    persisted: true,
  };
}

export class ProtocolPeer {
  readonly requests: PeerRequest[] = [];
  switches: SwitchWire[] = [];
  seq = 0;
  /** ok: snapshot then events; refuse: 503; silent: headers, then nothing; garbage: a malformed snapshot. */
  streamMode: "ok" | "refuse" | "silent" | "garbage" = "ok";
  readonly streams = new Set<ServerResponse>();
  private readonly handlers = new Map<string, PeerHandler>();
  private server: Server | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  url = "";

  /** Answers `METHOD /path` (exact path; `:id` matches one segment). */
  on(route: string, h: PeerHandler): this {
    this.handlers.set(route, h);
    return this;
  }

  async start(pingEveryMs = 0): Promise<this> {
    this.server = createServer((req, res) => void this.serve(req, res));
    await new Promise<void>((r) => this.server?.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    if (pingEveryMs > 0) {
      this.pingTimer = setInterval(() => this.ping(), pingEveryMs);
      this.pingTimer.unref();
    }
    return this;
  }

  async stop(): Promise<void> {
    clearInterval(this.pingTimer);
    this.dropStreams();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()));
  }

  /** Sends an event to every open stream. */
  send(event: string, data: unknown): void {
    const text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const s of this.streams) s.write(text);
  }

  create(sw: SwitchWire): number {
    this.switches.push(sw);
    this.send("change", { seq: ++this.seq, op: "create", switch: sw });
    return this.seq;
  }

  remove(id: string): number {
    const sw = this.switches.find((s) => s.id === id);
    this.switches = this.switches.filter((s) => s.id !== id);
    const gone = {
      ...(sw as SwitchWire),
      deleted_at: new Date().toISOString(),
      deleted_by: "olga",
    };
    this.send("change", { seq: ++this.seq, op: "delete", switch: gone });
    return this.seq;
  }

  ping(): void {
    this.send("ping", { seq: this.seq, at: new Date().toISOString() });
  }

  dropStreams(): void {
    for (const s of this.streams) s.destroy();
    this.streams.clear();
  }

  /** Requests to `path` (and method), in order. */
  calls(method: string, path: string): PeerRequest[] {
    return this.requests.filter((r) => r.method === method && r.path === path);
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://peer");
    const r: PeerRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      headers: req.headers,
      body: text === "" ? undefined : (JSON.parse(text) as unknown),
    };
    this.requests.push(r);
    if (r.method === "GET" && r.path === "/fleet/v1/stream") return this.stream(res);
    const h = this.match(r);
    const a: PeerAnswer =
      h === undefined
        ? { status: 404, body: { code: "not_found", message: `no route ${r.path}` } }
        : h(r.body, r);
    if (a === "hang") return;
    if (a === "drop") {
      res.destroy();
      return;
    }
    const out = JSON.stringify(a.body);
    res.writeHead(a.status, { "content-type": "application/json" });
    res.end(out);
  }

  private match(r: PeerRequest): PeerHandler | undefined {
    for (const [route, h] of this.handlers) {
      const [method, path] = route.split(" ") as [string, string];
      if (method !== r.method) continue;
      const a = path.split("/");
      const b = r.path.split("/");
      if (a.length === b.length && a.every((seg, i) => seg === ":id" || seg === b[i])) return h;
    }
    return undefined;
  }

  private stream(res: ServerResponse): void {
    if (this.streamMode === "refuse") {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: "fleet_store_unavailable", message: "down" }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    res.flushHeaders();
    this.streams.add(res);
    res.on("close", () => this.streams.delete(res));
    if (this.streamMode === "silent") return;
    if (this.streamMode === "garbage") {
      res.write(`event: snapshot\ndata: {"seq": "one", "switches": []}\n\n`);
      return;
    }
    res.write(
      `: hello\nevent: snapshot\ndata: ${JSON.stringify({ seq: this.seq, switches: this.switches })}\n\n`,
    );
  }
}
