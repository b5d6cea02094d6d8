/**
 * examples/mcp-agent as a reader runs it: the script spawns the built proxy
 * over stdio with the example's config (the reference deployment's tools on
 * the fixture server) against a real sidecar with the reference bundle, and
 * prints five outcomes.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { startTestToolgate } from "../helpers/toolgate";
import { approve, NODE, root, type Sidecar } from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

let sc: Sidecar;
beforeAll(async () => {
  const tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  sc = { tg, agent: tg.agentServer.url, control: tg.controlServer?.url ?? "" };
});
afterAll(async () => {
  await sc?.tg.stop();
});

function runExample(extra: string[], onLine: (l: string) => void = () => undefined) {
  const child = spawn(
    NODE,
    [
      join(root, "examples", "mcp-agent", "agent.mjs"),
      "--sidecar",
      sc.agent,
      "--console",
      sc.control,
      ...extra,
    ],
    { cwd: root },
  );
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => {
    const s = c.toString("utf8");
    out += s;
    for (const l of s.split("\n")) if (l !== "") onLine(l);
  });
  child.stderr.on("data", (c: Buffer) => (err += c.toString("utf8")));
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
    child.on("close", (code) => resolve({ code, out, err })),
  );
}

test("five calls: allow, allow with redaction, allow, deny with reasons, needs_approval with the console link", async () => {
  const { code, out, err } = await runExample([]);
  expect(err).toBe("");
  expect(code).toBe(0);
  const lines = out.trim().split("\n");
  expect(lines[0]).toMatch(/^tools offered: .*tickets\.read.*replies\.send \(needs approval\)/);
  expect(lines[0]).not.toMatch(/billing\.update|records\.delete/);
  expect(lines[1]).toMatch(/^1\. tickets\.read → allow: /);
  expect(lines[2]).toMatch(/^2\. accounts\.summary\.read → allow: .*"brand":"visa"/);
  expect(lines[2]).not.toMatch(/4111|card_number/);
  expect(lines[3]).toMatch(/^3\. refunds\.issue → allow: /);
  expect(lines[4]).toMatch(/^4\. billing\.update → deny: [a-z_]+: /);
  expect(lines[5]).toMatch(
    new RegExp(
      `^5\\. refunds\\.issue → needs_approval: ask an approver to open ${sc.control}/console/requests/apr_`,
    ),
  );
  expect(lines).toHaveLength(6);
});

test("--wait: the fifth call goes through once an approver approves", async () => {
  const { code, out } = await runExample(["--wait"], (l) => {
    const m = /needs approval: \S+\/console\/requests\/(apr_[\w-]+) \(waiting\)/.exec(l);
    if (m) void approve(sc, m[1] as string);
  });
  expect(code).toBe(0);
  expect(out).toMatch(/\n5\. refunds\.issue → allow: /);
});

test("over HTTP: the built proxy generates its bearer secret into --http-token-file (0600); the example passes it, a guess is refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mcp-example-"));
  const tokenFile = join(dir, "token");
  const proxy = spawn(
    NODE,
    [
      join(root, "bin", "toolgate.js"),
      "mcp",
      "--config",
      join(root, "examples", "mcp-agent", "mcp.yaml"),
      "--http",
      "127.0.0.1:0",
      "--http-token-file",
      tokenFile,
      "--sidecar",
      sc.agent,
      "--console",
      sc.control,
    ],
    { cwd: root, env: { ...process.env, TOOLGATE_MCP_LOG_LEVEL: "info" } },
  );
  try {
    const logLines: string[] = [];
    const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
      proxy.once("exit", (c) => reject(new Error(`proxy exited ${c}: ${logLines.join("\n")}`)));
      createInterface({ input: proxy.stderr }).on("line", (l) => {
        logLines.push(l);
        const rec = JSON.parse(l) as Record<string, unknown>;
        if (rec.event === "mcp.started") resolve(rec);
      });
    });
    expect(started.http_token_file).toBe(tokenFile);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    const secret = readFileSync(tokenFile, "utf8").trim();
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect(logLines.join("\n")).not.toContain(secret);
    const url = started.http as string;
    const { code, out } = await runExample(["--url", url, "--token-file", tokenFile]);
    expect(code).toBe(0);
    expect(out).toMatch(/^tools offered: .*tickets\.read/);
    expect(out).toMatch(/\n2\. accounts\.summary\.read → allow: .*"brand":"visa"/);
    expect(out).toMatch(/\n4\. billing\.update → deny: /);
    const guess = join(dir, "guess");
    writeFileSync(guess, "g".repeat(43));
    const refused = await runExample(["--url", url, "--token-file", guess]);
    expect(refused.code).not.toBe(0);
    expect(refused.out).toBe("");
  } finally {
    proxy.kill();
  }
});
