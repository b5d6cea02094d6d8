/**
 * examples/mcp-agent as a reader runs it: the script spawns the built proxy
 * over stdio with the example's config (the reference deployment's tools on
 * the fixture server) against a real sidecar with the reference bundle, and
 * prints five outcomes.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
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
