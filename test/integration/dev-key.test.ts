import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createPublicKey } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestToolgate, http } from "../helpers/toolgate";
import { bearer, token } from "../helpers/tokens";
import { captureLogger } from "../helpers/capture";
import type { Toolgate } from "../../src/app";

// The committed development key is public. toolgate recognises it by its key
// material, not by its file name: a renamed copy, the same key in a JWKS file
// or served by a JWKS URL is refused on a port that listens off loopback, and
// warned about wherever it is trusted.

const root = join(__dirname, "..", "..");
const devPub = join(root, "config", "dev", "dev-signing-key.pub.pem");
const dir = mkdtempSync(join(tmpdir(), "toolgate-devkey-"));

function devJwks(): string {
  const jwk = createPublicKey(readFileSync(devPub, "utf8")).export({ format: "jwk" });
  return JSON.stringify({ keys: [{ ...jwk, kid: "innocent-looking", alg: "ES256", use: "sig" }] });
}

async function startRefused(env: Record<string, string>): Promise<Error> {
  let started: Toolgate | undefined;
  try {
    started = await startTestToolgate(env);
  } catch (e) {
    return e as Error;
  }
  await started.stop();
  throw new Error("toolgate started, but it should have refused the development key");
}

describe("the development key is recognised by its material", () => {
  test("a renamed copy on an exposed control port is refused at start", async () => {
    const copy = join(dir, "corporate-issuer.pem");
    copyFileSync(devPub, copy);
    const e = await startRefused({
      TOOLGATE_CONTROL_HOST: "0.0.0.0",
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_CONTROL_JWT_PUBLIC_KEY_FILE: copy,
    });
    expect(e).toMatchObject({ code: "config_invalid" });
    expect(e.message).toContain('"control.host"');
    expect(e.message).toContain("committed development key");
  });

  test("the development key inside a JWKS file on an exposed agent port (jwt mode) is refused", async () => {
    const jwks = join(dir, "jwks.json");
    writeFileSync(jwks, devJwks());
    const e = await startRefused({
      TOOLGATE_IDENTITY_MODE: "jwt",
      TOOLGATE_AGENT_HOST: "0.0.0.0",
      TOOLGATE_IDENTITY_JWT_JWKS_FILE: jwks,
    });
    expect(e).toMatchObject({ code: "config_invalid" });
    expect(e.message).toContain('"server.agent.host"');
  });

  test("a renamed copy on loopback is accepted, with a warning", async () => {
    const copy = join(dir, "looks-real.pem");
    copyFileSync(devPub, copy);
    const logs = captureLogger();
    const tg = await startTestToolgate(
      { TOOLGATE_CONTROL_PORT: "0", TOOLGATE_CONTROL_JWT_PUBLIC_KEY_FILE: copy },
      { log: logs.log },
    );
    try {
      expect(logs.lines().some((l) => l.event === "identity.dev_keys")).toBe(true);
    } finally {
      await tg.stop();
    }
  });

  describe("a JWKS URL that serves the development key", () => {
    let server: Server;
    let url: string;
    beforeAll(async () => {
      const body = devJwks();
      server = createServer((_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(body);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    test("its tokens are refused on an exposed control port", async () => {
      const tg = await startTestToolgate({
        TOOLGATE_CONTROL_HOST: "0.0.0.0",
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_CONTROL_JWT_JWKS_URL: url,
      });
      try {
        const port = new URL(tg.controlServer?.url ?? "").port;
        const r = await http(
          `http://127.0.0.1:${port}`,
          "GET",
          "/v1/killswitches",
          undefined,
          bearer(await token("olga", { roles: ["admin"] })),
        );
        expect(r.status).toBe(401);
        expect(r.json).toMatchObject({ code: "unauthenticated" });
        expect(String((r.json as { message: string }).message)).toContain("development key");
      } finally {
        await tg.stop();
      }
    });

    test("on loopback its tokens work and the first one raises a warning", async () => {
      const logs = captureLogger();
      const tg = await startTestToolgate(
        { TOOLGATE_CONTROL_PORT: "0", TOOLGATE_CONTROL_JWT_JWKS_URL: url },
        { log: logs.log },
      );
      try {
        const r = await http(
          tg.controlServer?.url ?? "",
          "GET",
          "/v1/killswitches",
          undefined,
          bearer(await token("olga", { roles: ["admin"] })),
        );
        expect(r.status).toBe(200);
        expect(logs.lines().some((l) => l.event === "identity.dev_keys")).toBe(true);
      } finally {
        await tg.stop();
      }
    });
  });
});
