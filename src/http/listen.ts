import { randomUUID } from "node:crypto";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { toolgateError } from "../errors";
import type { Component, ComponentStatus } from "../shared/lifecycle";

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export interface ServeOptions {
  host: string;
  port: number;
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  /** node's default (5 s) when not given. */
  keepAliveTimeoutMs?: number;
  /** The settings that choose this port (`server.agent.port / TOOLGATE_AGENT_PORT`), named when it is taken. */
  setting?: string;
}

/** A port's HTTP server: its timeouts, malformed HTTP answered in JSON, listening. */
export function serve(app: RequestListener, opts: ServeOptions): Promise<RunningServer> {
  const server = createServer(app);
  server.requestTimeout = opts.requestTimeoutMs;
  server.headersTimeout = opts.headersTimeoutMs;
  if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  answerClientErrors(server);
  return listen(server, opts.host, opts.port, opts.setting);
}

/** Listens on host:port; resolves once listening, with the URL and a closer that drops open connections. */
export function listen(
  server: Server,
  host: string,
  port: number,
  setting = "its port setting",
): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException): void =>
      reject(
        e.code === "EADDRINUSE"
          ? toolgateError(
              "port_in_use",
              `${host.includes(":") ? `[${host}]` : host}:${port} is already in use by another process; ` +
                `stop that process or choose another port with ${setting} (0 picks a free one)`,
              { cause: e },
            )
          : e,
      );
    server.once("error", failed);
    server.listen(port, host, () => {
      server.off("error", failed);
      const addr = server.address() as AddressInfo;
      const h = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
      resolve({
        server,
        url: `http://${h}:${addr.port}`,
        close: () =>
          new Promise<void>((res) => {
            server.close(() => res());
            server.closeAllConnections();
          }),
      });
    });
  });
}

/**
 * Malformed HTTP (bad framing, oversized headers, a request line that is no
 * HTTP, a request that takes too long) never reaches express: node would
 * answer it with a bare status line. Answers it in the ports' JSON shape,
 * `{code, message}` with an X-Request-ID, and closes the connection.
 */
export function answerClientErrors(server: Server): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const [status, text, code] =
      err.code === "HPE_HEADER_OVERFLOW"
        ? [431, "Request Header Fields Too Large", "invalid_request"]
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, "Request Timeout", "invalid_request"]
          : [400, "Bad Request", "invalid_request"];
    const body = JSON.stringify({
      code,
      message: `malformed HTTP request: ${err.code ?? err.message}`,
    });
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `X-Request-ID: ${randomUUID()}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/**
 * A port as a component: OK while it listens. Its server is opened at start
 * and closed at stop (open connections are dropped).
 */
export class PortComponent implements Component {
  private running: RunningServer | undefined;
  private stopped = false;
  constructor(
    readonly name: string,
    private readonly open: () => Promise<RunningServer>,
  ) {}

  get server(): RunningServer {
    if (this.running === undefined) throw new Error(`${this.name} is not running`);
    return this.running;
  }

  async start(): Promise<void> {
    const running = await this.open();
    if (this.stopped) await running.close();
    else this.running = running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const running = this.running;
    this.running = undefined;
    await running?.close();
  }

  status(): ComponentStatus {
    if (this.running?.server.listening === true) return { state: "OK" };
    return { state: "NOT_READY", detail: this.stopped ? "stopped" : "not listening" };
  }
}
