/**
 * `toolgate mcp` against a sidecar in identity mode jwt: the proxy sends the
 * user's token (sidecar.token_env) on every sidecar call; without it, or with
 * someone else's, nothing is listed or forwarded.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { compileMcpConfig, startMcpProxy, type RunningProxy } from "../../src/mcp";
import { token } from "../helpers/tokens";
import {
  FIXTURE,
  httpClient,
  mcpBundle,
  metaOf,
  NODE,
  SESSION,
  startSidecar,
  TEST_TOOLS,
  textOf,
  type Sidecar,
} from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

let sc: Sidecar;
beforeAll(async () => {
  sc = await startSidecar(mcpBundle([{ tools: TEST_TOOLS }]), { TOOLGATE_IDENTITY_MODE: "jwt" });
});
afterAll(async () => {
  await sc?.tg.stop();
});

async function proxyWith(
  tok: string | undefined,
): Promise<{ proxy: RunningProxy; client: Client }> {
  const proxy = await startMcpProxy(
    compileMcpConfig(
      {
        sidecar: { url: sc.agent, ...(tok !== undefined ? { token_env: "MCP_TEST_TOKEN" } : {}) },
        console_url: sc.control,
        session: SESSION,
        servers: [{ name: "fx", command: NODE, args: [FIXTURE] }],
        serve: { http: "127.0.0.1:0" },
        log_level: "silent",
      },
      {},
      tok !== undefined ? { MCP_TEST_TOKEN: tok } : {},
    ),
  );
  return { proxy, client: await httpClient(proxy) };
}

test("with alice's token: listed and allowed, the grant for alice", async () => {
  const { proxy, client } = await proxyWith(await token("alice", { roles: ["support_agent"] }));
  try {
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toContain("lookup");
    const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(r.isError).toBeFalsy();
    expect(metaOf(r)["io.toolgate/outcome"]).toBe("allow");
  } finally {
    await client.close();
    await proxy.stop();
  }
});

test("with another user's token: nothing is listed, calls are refused (subject_mismatch)", async () => {
  const { proxy, client } = await proxyWith(await token("sam", { roles: ["support_agent"] }));
  try {
    await expect(client.listTools()).rejects.toThrow();
    const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/subject_mismatch/);
  } finally {
    await client.close();
    await proxy.stop();
  }
});

test("without a token: calls are refused (unauthenticated) — fail closed", async () => {
  const { proxy, client } = await proxyWith(undefined);
  try {
    const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/unauthenticated/);
  } finally {
    await client.close();
    await proxy.stop();
  }
});
