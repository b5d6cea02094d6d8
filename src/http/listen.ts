import { randomUUID } from "node:crypto";
import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync, type Stats } from "node:fs";
import { createServer, type RequestListener, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { dirname } from "node:path";
import { toolgateError } from "../errors";
import type { Component, ComponentStatus } from "../shared/lifecycle";

export interface RunningServer {
  server: Server;
  url: string;
  /** The Unix domain socket the port also listens on (its own server, the same app), if any. */
  socket?: { path: string; server: Server };
  close(): Promise<void>;
}

/** A Unix domain socket to listen on beside TCP (`server.agent.socket`). */
export interface SocketOptions {
  /** Absolute path of the socket file. */
  path: string;
  /** File mode of the socket (0o660: owner and group may connect). */
  mode: number;
  /** The settings that choose it, named in messages. */
  setting: string;
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
  /** Also listen on this Unix domain socket (a second server with the same app and timeouts). */
  socket?: SocketOptions;
}

/** A port's HTTP server: its timeouts, malformed HTTP answered in JSON, listening. */
export async function serve(app: RequestListener, opts: ServeOptions): Promise<RunningServer> {
  const make = (): Server => {
    const server = createServer(app);
    server.requestTimeout = opts.requestTimeoutMs;
    server.headersTimeout = opts.headersTimeoutMs;
    if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
    answerClientErrors(server);
    return server;
  };
  const tcp = await listen(make(), opts.host, opts.port, opts.setting);
  if (opts.socket === undefined) return tcp;
  let unix: Server;
  try {
    unix = await listenSocket(make(), opts.socket);
  } catch (e) {
    await tcp.close();
    throw e;
  }
  const socket = { path: opts.socket.path, server: unix };
  return {
    ...tcp,
    socket,
    close: async () => {
      await Promise.all([tcp.close(), closeServer(unix)]);
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((res) => {
    server.close(() => res());
    server.closeAllConnections();
  });
}

/**
 * Listens on a Unix domain socket, safely. The socket's directory is created
 * (one level, mode 0750 — or 0700 when `mode` gives the group nothing) when
 * only it is missing: a Kubernetes emptyDir is world-writable, so the chart
 * puts the socket in a directory toolgate makes inside it. The directory must
 * belong to toolgate's user or root and must not be writable by others
 * unless it has the sticky bit (anyone could otherwise swap the socket for
 * their own). A file already at the path is removed only when it is a socket
 * nobody answers on (left over from a process that died), never when it is
 * anything else or a live server's. The socket is created with `mode` (the
 * umask narrowed while it is bound, so it is never more open than that) and
 * removed when the server closes.
 */
export async function listenSocket(server: Server, opts: SocketOptions): Promise<Server> {
  const { path, mode, setting } = opts;
  const dir = dirname(path);
  const refuse = (why: string, fix: string, cause?: unknown): never => {
    throw toolgateError(
      "config_invalid",
      `${setting} is ${JSON.stringify(path)} but ${why}. Fix: ${fix}.`,
      cause === undefined ? undefined : { cause },
    );
  };
  let dirStat = statOrUndefined(dir);
  if (dirStat === undefined) {
    try {
      mkdirSync(dir, { mode: (mode & 0o070) !== 0 ? 0o750 : 0o700 });
    } catch (e) {
      refuse(
        `its directory ${dir} is missing and cannot be created (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        "create the directory above it (in Kubernetes, a volume shared by the agent and the sidecar) or choose another path",
        e,
      );
    }
    dirStat = statSync(dir);
  }
  if (!dirStat.isDirectory()) refuse(`${dir} is not a directory`, "choose a path in a directory");
  const uid = process.geteuid?.();
  if (uid !== undefined && dirStat.uid !== uid && dirStat.uid !== 0) {
    refuse(
      `${dir} belongs to another user (uid ${dirStat.uid}), who could replace the socket`,
      "put the socket in a directory of toolgate's user (or root's)",
    );
  }
  if ((dirStat.mode & 0o002) !== 0 && (dirStat.mode & 0o1000) === 0) {
    refuse(
      `${dir} is writable by everyone and has no sticky bit: any local user could replace the socket with their own`,
      "put the socket in a directory only toolgate (and the agent's group) can write to, e.g. a subdirectory toolgate creates (<dir>/agent/agent.sock)",
    );
  }
  await removeStale(path, setting);
  await new Promise<void>((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException): void =>
      reject(
        e.code === "EADDRINUSE"
          ? toolgateError(
              "port_in_use",
              `${path} is already in use by another process; stop it or choose another path with ${setting}`,
              { cause: e },
            )
          : e,
      );
    server.once("error", failed);
    // bind creates the socket file as 0o777 & ~umask: narrowed to `mode` for the bind only
    const umask = process.umask(0o777 & ~mode);
    try {
      server.listen(path, () => {
        server.off("error", failed);
        resolve();
      });
    } finally {
      process.umask(umask);
    }
  });
  try {
    chmodSync(path, mode);
  } catch (e) {
    await closeServer(server);
    throw e;
  }
  return server;
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Removes a socket file left behind by a process that is gone; refuses anything else at the path. */
async function removeStale(path: string, setting: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if (!st.isSocket()) {
    throw toolgateError(
      "config_invalid",
      `${setting} is ${JSON.stringify(path)} but a file that is not a socket is there; toolgate removes only a stale socket. ` +
        `Fix: remove that file or choose another path.`,
    );
  }
  // stale only when nobody listens (ECONNREFUSED); a live server or a socket we may not use is left alone
  const outcome = await new Promise<string>((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve("live");
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  if (outcome !== "ECONNREFUSED") {
    throw toolgateError(
      "port_in_use",
      outcome === "live"
        ? `${path} is already in use by another process (it answers); stop it or choose another path with ${setting}`
        : `${path} is a socket toolgate cannot check (${outcome}); remove it or choose another path with ${setting}`,
    );
  }
  unlinkSync(path);
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
    const r = this.running;
    if (r?.server.listening === true && (r.socket === undefined || r.socket.server.listening))
      return { state: "OK" };
    return { state: "NOT_READY", detail: this.stopped ? "stopped" : "not listening" };
  }
}
