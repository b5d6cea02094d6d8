/**
 * `toolgate mcp` in front of the published @modelcontextprotocol/server-filesystem
 * (over stdio, on a temp directory) with a real sidecar: reads are allowed
 * and listed, writes and moves denied and hidden — and the file system shows
 * that a denied call never ran.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { startMcpProxy, type RunningProxy } from "../../src/mcp";
import {
  httpClient,
  mcpBundle,
  metaOf,
  NODE,
  proxyConfig,
  root,
  startSidecar,
  textOf,
  type Sidecar,
} from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

const FS_BIN = join(
  root,
  "node_modules",
  "@modelcontextprotocol",
  "server-filesystem",
  "dist",
  "index.js",
);
const FS_TOOLS = {
  read_text_file: { class: "read", stage: "autonomous", granted: true },
  list_directory: { class: "read", stage: "autonomous", granted: true },
  write_file: { class: "execute", stage: "autonomous", granted: false },
  move_file: { class: "admin", stage: "autonomous", granted: false },
};

let sc: Sidecar;
let proxy: RunningProxy;
let client: Client;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mcp-fs-"));
  writeFileSync(join(dir, "notes.txt"), "ticket 42: refund pending\n");
  sc = await startSidecar(mcpBundle([{ tools: FS_TOOLS }]));
  proxy = await startMcpProxy(
    proxyConfig(sc, { servers: [{ name: "fs", command: NODE, args: [FS_BIN, dir] }] }),
  );
  client = await httpClient(proxy);
});
afterAll(async () => {
  await client?.close();
  await proxy?.stop();
  await sc?.tg.stop();
});

test("only the granted read tools are listed", async () => {
  const names = (await client.listTools()).tools.map((t) => t.name).sort();
  expect(names).toEqual(["list_directory", "read_text_file"]);
});

test("a read goes through; a write and a move are denied and never happen", async () => {
  const read = await client.callTool({
    name: "read_text_file",
    arguments: { path: join(dir, "notes.txt") },
  });
  expect(read.isError).toBeFalsy();
  expect(textOf(read)).toBe("ticket 42: refund pending\n");

  const write = await client.callTool({
    name: "write_file",
    arguments: { path: join(dir, "evil.txt"), content: "pwned" },
  });
  expect(write.isError).toBe(true);
  expect(metaOf(write)["io.toolgate/outcome"]).toBe("deny");
  expect(existsSync(join(dir, "evil.txt"))).toBe(false);

  const move = await client.callTool({
    name: "move_file",
    arguments: { source: join(dir, "notes.txt"), destination: join(dir, "gone.txt") },
  });
  expect(move.isError).toBe(true);
  expect(readFileSync(join(dir, "notes.txt"), "utf8")).toBe("ticket 42: refund pending\n");
  expect(existsSync(join(dir, "gone.txt"))).toBe(false);
});
