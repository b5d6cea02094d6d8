/**
 * The agent port on a Unix domain socket (`server.agent.socket`, issue #20):
 * real HTTP over a real socket file — decisions on the three decision routes,
 * health, malformed HTTP answered in JSON, the same answers as over TCP — and
 * the rules for the socket file: created with its mode, a stale socket
 * replaced, any other file or a live server's socket left alone and the start
 * refused, a directory anyone may write to without the sticky bit refused,
 * the file removed at stop. Real toolgate, real sockets, real child process.
 */
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { request, type OutgoingHttpHeaders } from "node:http";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import type { ToolgateError } from "../../src/errors";
import { collect, type HttpResult } from "../helpers/net";
import { http, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

/** One HTTP request over the socket at `socketPath`. */
function overSocket(
  socketPath: string,
  method: string,
  path: string,
  body?: string,
  headers: OutgoingHttpHeaders = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          host: "localhost",
          ...(body !== undefined
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
            : {}),
          ...headers,
        },
      },
      (res) => collect(res, resolve, reject),
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A fresh private directory for a socket (mode 0700, as mkdtemp makes it). */
function sockDir(): string {
  return mkdtempSync(join(tmpdir(), "tg-sock-"));
}

/** The error a start refused with. */
async function startError(env: Record<string, string>): Promise<ToolgateError> {
  let tg: Toolgate | undefined;
  try {
    tg = await startTestToolgate(env);
  } catch (e) {
    return e as ToolgateError;
  }
  await tg.stop();
  throw new Error("toolgate started");
}

const decisionOf = (r: HttpResult): { outcome: string; codes: string[] } => {
  const j = r.json as { outcome?: string; reasons?: { code: string }[] };
  return { outcome: j.outcome ?? "", codes: (j.reasons ?? []).map((x) => x.code) };
};

describe("the agent port on a Unix domain socket", () => {
  let tg: Toolgate;
  let sock: string;
  beforeAll(async () => {
    sock = join(sockDir(), "agent.sock");
    tg = await startTestToolgate({ TOOLGATE_AGENT_SOCKET: sock });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("the socket file is a socket with mode 0660", () => {
    const st = lstatSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o660);
    expect(tg.agentServer.socket?.path).toBe(sock);
  });

  test("decisions over the socket: the same outcomes and reasons as over TCP", async () => {
    const cases = [
      { req: refRequest({ tool: "tickets.read" }), outcome: "allow", codes: ["granted"] },
      {
        req: refRequest({ tool: "refunds.issue", args: { amount: 9000 } }),
        outcome: "deny",
        codes: ["limit_exceeded"],
      },
      { req: refRequest({ tool: "no.such.tool" }), outcome: "deny", codes: ["unknown_tool"] },
    ];
    for (const c of cases) {
      const body = JSON.stringify(c.req);
      const u = await overSocket(sock, "POST", "/v1/decisions", body);
      const t = await http(tg.agentServer.url, "POST", "/v1/decisions", body, {
        "content-type": "application/json",
      });
      expect(u.status).toBe(200);
      expect(decisionOf(u)).toEqual({ outcome: c.outcome, codes: c.codes });
      expect(decisionOf(t)).toEqual(decisionOf(u));
      expect(u.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
      expect(u.headers["content-type"]).toMatch(/^application\/json/);
    }
    // an allow over the socket carries its signed grant
    const allow = await overSocket(
      sock,
      "POST",
      "/v1/decisions",
      JSON.stringify(refRequest({ tool: "tickets.read" })),
    );
    expect((allow.json as { grant?: unknown }).grant).toEqual(
      expect.stringMatching(/^ey[\w-]+\.[\w-]+\.[\w-]+$/),
    );
  });

  test("the OPA Data API and AuthZEN evaluation over the socket", async () => {
    const req = refRequest({ tool: "tickets.read" });
    const opa = await overSocket(
      sock,
      "POST",
      "/v1/data/toolgate/decision",
      JSON.stringify({ input: req }),
    );
    expect(opa.status).toBe(200);
    expect((opa.json as { result: { outcome: string } }).result.outcome).toBe("allow");
    const az = await overSocket(sock, "POST", "/access/v1/evaluation", JSON.stringify(req));
    expect(az.status).toBe(200);
    expect((az.json as { decision: boolean }).decision).toBe(true);
  });

  test("health over the socket", async () => {
    const live = await overSocket(sock, "GET", "/health/live");
    expect(live.status).toBe(200);
    expect(live.json).toEqual({ status: "ok" });
    const ready = await overSocket(sock, "GET", "/health/ready");
    expect(ready.status).toBe(200);
    expect((ready.json as { status: string }).status).toBe("ok");
    expect(
      (ready.json as { components: Record<string, { state: string }> }).components.agent_server
        ?.state,
    ).toBe("OK");
  });

  test("bad input over the socket gets the port's error shapes", async () => {
    const notJson = await overSocket(sock, "POST", "/v1/decisions", "{nope");
    expect(notJson.status).toBe(400);
    expect((notJson.json as { code: string }).code).toBe("malformed_json");
    expect(notJson.headers["x-request-id"]).toBeDefined();
    const deep = await overSocket(
      sock,
      "POST",
      "/v1/decisions",
      `${"[".repeat(40)}${"]".repeat(40)}`,
    );
    expect(deep.status).toBe(400);
    expect((deep.json as { code: string }).code).toBe("nesting_too_deep");
    // malformed HTTP: answered in JSON, then closed
    const raw = await new Promise<string>((resolve, reject) => {
      const s = connect(sock);
      let got = "";
      s.on("data", (d: Buffer) => (got += d.toString("utf8")));
      s.on("end", () => resolve(got));
      s.on("error", reject);
      s.write("NOT HTTP AT ALL\r\n\r\n");
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expect(raw).toContain('"code":"invalid_request"');
  });
});

describe("the socket file's rules", () => {
  test("a stale socket (its process killed) is replaced; stop removes the socket", async () => {
    const sock = join(sockDir(), "agent.sock");
    // a process that listens on the path and dies without cleaning up
    const child = spawn(
      process.execPath,
      [
        "-e",
        `require("node:net").createServer().listen(${JSON.stringify(sock)}, () => console.log("up"))`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    expect(lstatSync(sock).isSocket()).toBe(true);
    const tg = await startTestToolgate({ TOOLGATE_AGENT_SOCKET: sock });
    try {
      expect((await overSocket(sock, "GET", "/health/live")).status).toBe(200);
    } finally {
      await tg.stop();
    }
    expect(existsSync(sock)).toBe(false);
  });

  test("a file that is not a socket is left alone and the start refused", async () => {
    const sock = join(sockDir(), "agent.sock");
    writeFileSync(sock, "precious");
    const e = await startError({ TOOLGATE_AGENT_SOCKET: sock });
    expect(e.code).toBe("config_invalid");
    expect(e.message).toContain("server.agent.socket");
    expect(e.message).toContain("not a socket");
    expect(readFileSync(sock, "utf8")).toBe("precious");
  });

  test("a live server's socket is left alone and the start refused (port_in_use)", async () => {
    const sock = join(sockDir(), "agent.sock");
    const other = createServer((s) => {
      s.on("error", () => undefined); // toolgate's probe hangs up at once
      s.end("mine");
    });
    await new Promise<void>((resolve) => other.listen(sock, resolve));
    try {
      const e = await startError({ TOOLGATE_AGENT_SOCKET: sock });
      expect(e.code).toBe("port_in_use");
      expect(e.message).toContain(sock);
      const said = await new Promise<string>((resolve) => {
        const s = connect(sock);
        let got = "";
        s.on("data", (d: Buffer) => (got += d.toString()));
        s.on("end", () => resolve(got));
      });
      expect(said).toBe("mine");
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  });

  test("a directory anyone may write to is refused without the sticky bit, taken with it", async () => {
    const dir = join(sockDir(), "shared");
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const e = await startError({ TOOLGATE_AGENT_SOCKET: join(dir, "agent.sock") });
    expect(e.code).toBe("config_invalid");
    expect(e.message).toContain("sticky bit");
    expect(existsSync(join(dir, "agent.sock"))).toBe(false);
    chmodSync(dir, 0o1777);
    const tg = await startTestToolgate({ TOOLGATE_AGENT_SOCKET: join(dir, "agent.sock") });
    try {
      expect((await overSocket(join(dir, "agent.sock"), "GET", "/health/live")).status).toBe(200);
    } finally {
      await tg.stop();
    }
  });

  test("a missing directory is created (0750, one level); two missing levels are refused", async () => {
    const dir = join(sockDir(), "agent");
    const tg = await startTestToolgate({ TOOLGATE_AGENT_SOCKET: join(dir, "agent.sock") });
    try {
      expect(statSync(dir).mode & 0o7777).toBe(0o750);
      expect((await overSocket(join(dir, "agent.sock"), "GET", "/health/live")).status).toBe(200);
    } finally {
      await tg.stop();
    }
    const e = await startError({ TOOLGATE_AGENT_SOCKET: join(sockDir(), "a", "b", "agent.sock") });
    expect(e.code).toBe("config_invalid");
    expect(e.message).toContain("server.agent.socket");
    expect(e.message).toContain("cannot be created");
    expect(e.message).toContain("Fix:");
  });

  test("in a world-writable directory without the sticky bit (a Kubernetes emptyDir), a subdirectory toolgate creates is taken", async () => {
    const shared = join(sockDir(), "emptydir");
    mkdirSync(shared);
    chmodSync(shared, 0o2777);
    const sock = join(shared, "agent", "agent.sock");
    const tg = await startTestToolgate({ TOOLGATE_AGENT_SOCKET: sock });
    try {
      expect((await overSocket(sock, "GET", "/health/live")).status).toBe(200);
    } finally {
      await tg.stop();
    }
  });

  test("server.agent.socket_mode sets the mode; modes that let others write are refused", async () => {
    const sock = join(sockDir(), "agent.sock");
    const tg = await startTestToolgate({
      TOOLGATE_AGENT_SOCKET: sock,
      TOOLGATE_AGENT_SOCKET_MODE: "0600",
    });
    try {
      expect(statSync(sock).mode & 0o7777).toBe(0o600);
    } finally {
      await tg.stop();
    }
    for (const [mode, says] of [
      ["0666", "every local user could connect"],
      ["rw-rw----", "an octal file mode"],
    ] as const) {
      let message = "";
      try {
        compileConfig({ server: { agent: { socket: sock, socket_mode: mode } } }, {});
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toContain("server.agent.socket_mode");
      expect(message).toContain(says);
    }
  });

  test("a socket path longer than the platform allows is refused by the config", () => {
    let message = "";
    try {
      compileConfig({ server: { agent: { socket: `/tmp/${"s".repeat(120)}.sock` } } }, {});
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("server.agent.socket");
    expect(message).toContain("107 bytes");
  });
});
