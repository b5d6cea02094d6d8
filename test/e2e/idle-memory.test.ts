/**
 * `toolgate serve` gives memory back once it goes idle after load
 * (server.idle_memory_release_seconds): the built CLI in a child process, real
 * HTTP on loopback, its debug log read back. No RSS numbers are asserted
 * (they depend on timing and the machine); the log says what ran.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { tempDir } from "../helpers/opa";
import { refRequest } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");
const bin = join(root, "bin", "toolgate.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Line {
  event?: string;
  reason?: string;
  heap_mb?: number[];
  gc_ms?: number;
}

/** The child's CPU time in µs (all threads) from /proc, or undefined off Linux. */
function cpuMicros(pid: number): number | undefined {
  const f = `/proc/${pid}/stat`;
  if (!existsSync(f)) return undefined;
  // fields after the command's closing parenthesis: utime is the 14th field, stime the 15th
  const rest = readFileSync(f, "utf8").split(") ")[1]?.split(" ") ?? [];
  return ((Number(rest[11]) + Number(rest[12])) * 1_000_000) / 100; // USER_HZ is 100 on Linux
}

function post(agent: Agent, port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/decisions",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("toolgate serve: idle memory release", () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill("SIGKILL");
  });

  test("once after a burst of decisions, in both threads, and not again while idle", async () => {
    const proc = spawn(process.execPath, [bin, "serve"], {
      cwd: root,
      env: {
        ...process.env,
        TOOLGATE_AGENT_PORT: "0",
        TOOLGATE_STATE_DIR: tempDir(),
        TOOLGATE_LOG_LEVEL: "debug",
        TOOLGATE_SERVER_IDLE_MEMORY_RELEASE_SECONDS: "1",
        OTEL_SDK_DISABLED: "true",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    let stdout = "";
    proc.stderr?.resume();
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${stdout}`)), 15_000);
      proc.stdout?.on("data", (c: Buffer) => {
        stdout += c.toString();
        const m = /"agent_port":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(stdout);
        if (m?.[1]) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      proc.on("exit", (code) => reject(new Error(`exited ${code}: ${stdout}`)));
    });
    const lines = (): Line[] =>
      stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Line);
    const released = (event: string, reason?: string): Line[] =>
      lines().filter((l) => l.event === event && (reason === undefined || l.reason === reason));

    // start-up released once; idle since then, but with no activity: nothing more
    await sleep(2_000);
    expect(released("server.memory_released", "startup")).toHaveLength(1);
    expect(released("server.memory_released", "idle")).toHaveLength(0);
    expect(released("audit.memory_released")).toHaveLength(0);

    // a burst: at least a few thousand decisions, and (on Linux, where we can read it) until
    // the sidecar has used 1.5 s of CPU, well above the 1 s of activity a release needs
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const body = JSON.stringify(refRequest({ tool: "tickets.read" }));
    const pid = proc.pid ?? 0;
    const cpu0 = cpuMicros(pid);
    let sent = 0;
    const statuses = new Map<number, number>();
    const worker = async (): Promise<void> => {
      for (;;) {
        const used = cpuMicros(pid);
        const enough =
          sent >= 3_000 && (cpu0 === undefined || used === undefined || used - cpu0 >= 1_500_000);
        if (enough || sent >= 60_000) return;
        sent++;
        const s = await post(agent, port, body);
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    agent.destroy();
    expect([...statuses.keys()]).toEqual([200]);
    expect(released("server.memory_released", "idle")).toHaveLength(0);

    // idle: within a window (1 s) and a check (250 ms) or so, one release in each thread
    const t0 = Date.now();
    while (released("audit.memory_released").length === 0 && Date.now() - t0 < 10_000)
      await sleep(100);
    // and nothing more while it stays idle (12 more checks)
    await sleep(3_000);
    const idle = released("server.memory_released", "idle");
    expect(idle).toHaveLength(1);
    expect(released("server.memory_released", "startup")).toHaveLength(1);
    const worker1 = released("audit.memory_released");
    expect(worker1).toHaveLength(1);
    for (const l of [...idle, ...worker1]) {
      expect(l.heap_mb).toHaveLength(2);
      expect(typeof l.gc_ms).toBe("number");
    }
    // the main thread's collection ran first, then the worker's (never both at once)
    const events = lines().map((l) => l.event);
    const mainAt = events.findIndex(
      (e, i) => e === "server.memory_released" && lines()[i]?.reason === "idle",
    );
    expect(mainAt).toBeGreaterThan(-1);
    expect(events.indexOf("audit.memory_released")).toBeGreaterThan(mainAt);

    // stopping clears the timer: SIGTERM exits 0 promptly
    const exited = new Promise<number | null>((resolve) => proc.on("exit", resolve));
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 90_000);
});
