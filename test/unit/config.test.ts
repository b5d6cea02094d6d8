import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileConfig, FIELDS, loadConfig } from "../../src/config";
import { ToolgateError } from "../../src/errors";

function configError(fn: () => unknown): ToolgateError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ToolgateError) return e;
    throw e;
  }
  throw new Error("expected a config error");
}

describe("config", () => {
  test("no file, no env: the embedded default", () => {
    const c = compileConfig({}, {});
    expect(c.agent.id).toBe("support-triage");
    expect(c.server.agent).toEqual({
      host: "127.0.0.1",
      port: 8181,
      socket: null,
      socketMode: 0o660,
    });
    expect(c.policy.embedded).toBe(true);
    expect(c.policy.bundle).toMatch(/bundles[/\\]support-triage\.tar\.gz$/);
    expect(c.policy.entrypoint).toBe("toolgate/decision");
    expect(c.server.limits).toEqual({ bodyBytes: 1048576, maxDepth: 32, maxEvaluations: 256 });
  });

  test("environment overrides the file, and is typed", () => {
    const c = compileConfig(
      { server: { agent: { port: 9000 } }, agent: { id: "from-file" } },
      { TOOLGATE_AGENT_PORT: "9100", TOOLGATE_LOG_LEVEL: "debug" },
    );
    expect(c.server.agent.port).toBe(9100);
    expect(c.agent.id).toBe("from-file");
    expect(c.log.level).toBe("debug");
    expect(c.origin.env).toEqual(
      expect.arrayContaining(["TOOLGATE_AGENT_PORT", "TOOLGATE_LOG_LEVEL"]),
    );
  });

  test("every problem is reported at once, naming the key and the fix", () => {
    const e = configError(() =>
      compileConfig(
        { server: { agent: { port: "eighty" } }, polcy: { bundle: "x" }, log: { level: "loud" } },
        {},
      ),
    );
    expect(e.code).toBe("config_invalid");
    expect(e.message).toContain(
      'key "server.agent.port" must be an integer from 0 to 65535, got "eighty"',
    );
    expect(e.message).toContain('unknown key "polcy.bundle": did you mean "policy.bundle"?');
    expect(e.message).toContain('key "log.level" must be one of');
    expect(e.message).toMatch(/Fix:/);
    expect((e.details?.errors as string[]).length).toBe(3);
  });

  test("a bad environment variable is named as such", () => {
    const e = configError(() => compileConfig({}, { TOOLGATE_AGENT_PORT: "99999" }));
    expect(e.message).toContain(
      "environment variable TOOLGATE_AGENT_PORT must be an integer from 0 to 65535",
    );
  });

  test("a console OpenID provider over plain http is refused off loopback", () => {
    const e = configError(() =>
      compileConfig({}, { TOOLGATE_CONSOLE_OIDC_ISSUER: "http://idp.example.com/realms/x" }),
    );
    expect(e.message).toContain('key "console.oidc.issuer"');
    expect(e.message).toContain("https://");
    for (const ok of ["https://idp.example.com", "http://127.0.0.1:9000/op", "http://localhost:1/"])
      expect(compileConfig({}, { TOOLGATE_CONSOLE_OIDC_ISSUER: ok }).console.oidc.issuer).toBe(ok);
  });

  test("trusted identity off loopback is refused", () => {
    const e = configError(() => compileConfig({ server: { agent: { host: "0.0.0.0" } } }, {}));
    expect(e.message).toContain('"identity.mode" is "trusted"');
  });

  test("the public development key is never trusted off loopback", () => {
    const e = configError(() => compileConfig({ control: { host: "0.0.0.0" } }, {}));
    expect(e.message).toContain("trusts the committed development key");
    expect(e.message).toContain("control.jwt.public_key_file");
    const a = configError(() =>
      compileConfig({ identity: { mode: "jwt" }, server: { agent: { host: "0.0.0.0" } } }, {}),
    );
    expect(a.message).toContain("identity.mode jwt trusts the committed development key");
    // with real keys configured, exposing the control port is allowed
    expect(
      compileConfig(
        { control: { host: "0.0.0.0", jwt: { jwks_url: "https://idp.example.com/jwks" } } },
        {},
      ).control.host,
    ).toBe("0.0.0.0");
  });

  test("agent ids are checked", () => {
    expect(configError(() => compileConfig({ agent: { id: "has space" } }, {})).message).toContain(
      'key "agent.id"',
    );
  });

  test("a YAML file, with relative bundle paths resolved against it", () => {
    const dir = mkdtempSync(join(tmpdir(), "tg-cfg-"));
    const file = join(dir, "toolgate.yaml");
    writeFileSync(file, "agent:\n  id: billing-bot\npolicy:\n  bundle: ./b.tar.gz\n");
    const c = loadConfig(file, {});
    expect(c.agent.id).toBe("billing-bot");
    expect(c.policy.bundle).toBe(join(dir, "b.tar.gz"));
    expect(c.policy.embedded).toBe(false);
    expect(c.origin.file).toBe(file);
  });

  test("an unreadable or non-mapping file is a clear error", () => {
    expect(configError(() => loadConfig("/nonexistent/toolgate.yaml", {})).code).toBe(
      "config_unreadable",
    );
    const dir = mkdtempSync(join(tmpdir(), "tg-cfg-"));
    writeFileSync(join(dir, "list.yaml"), "- a\n- b\n");
    expect(configError(() => loadConfig(join(dir, "list.yaml"), {})).code).toBe("config_invalid");
  });

  test("docs/configuration.md documents every key and variable", () => {
    const doc = readFileSync(join(__dirname, "..", "..", "docs", "configuration.md"), "utf8");
    for (const f of FIELDS) {
      expect(doc).toContain(`\`${f.key}\``);
      expect(doc).toContain(`\`${f.env}\``);
    }
  });
});
