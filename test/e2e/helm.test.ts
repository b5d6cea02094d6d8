/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-explicit-any -- rendered manifests are untyped YAML */
/**
 * The Helm chart in helm/toolgate: `helm lint --strict`, `helm template` for
 * several values files (and a parent chart using the sidecar template), every
 * rendered object strictly decoded into the k8s.io/api types offline
 * (tools/k8s-validate), the config file it renders accepted by toolgate's own
 * config compiler, golden files for the defaults (UPDATE_GOLDEN=1 rewrites
 * them), and the chart README documenting every value.
 */
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { compileConfig } from "../../src/config";

const root = join(__dirname, "..", "..");
const chart = join(root, "helm", "toolgate");
const KUBE = "1.33.0";

function tool(name: string): string {
  const r = spawnSync("bash", [join(root, "scripts", "tools.sh"), name], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`scripts/tools.sh ${name}: ${r.stderr}`);
  return r.stdout.trim();
}
const helm = tool("helm");
const validator = tool("k8s-validate");

function run(cmd: string, args: string[], input?: string) {
  return spawnSync(cmd, args, {
    encoding: "utf8",
    input,
    env: { ...process.env, HELM_CACHE_HOME: join(tmpdir(), "toolgate-helm-cache") },
  });
}

function template(values: string[] = [], chartDir = chart, set: string[] = []) {
  return run(helm, [
    "template",
    "tg",
    chartDir,
    "--kube-version",
    KUBE,
    "--namespace",
    "agents",
    ...values.flatMap((v) => ["-f", v]),
    ...set.flatMap((s) => ["--set", s]),
  ]);
}

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec?: any;
  data?: Record<string, string>;
};
function objects(text: string): Obj[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
}

type Container = {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: any }>;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
};

/** Placeholders for the values a container takes from Secrets. */
const SECRET_PLACEHOLDERS: Record<string, string> = {
  TOOLGATE_POSTGRES_URL: "postgres://toolgate:placeholder@postgres.example:5432/toolgate",
};

/**
 * Each container running toolgate (TOOLGATE_CONFIG set) in the rendered
 * Deployments: its config file (from the ConfigMap mounted there) and its
 * TOOLGATE_* environment.
 */
function toolgateConfigs(objs: Obj[]) {
  const out: Array<{
    deployment: string;
    container: string;
    raw: any;
    env: Record<string, string>;
  }> = [];
  for (const dep of objs.filter((o) => o.kind === "Deployment")) {
    const pod = dep.spec.template.spec;
    for (const c of [...(pod.initContainers ?? []), ...pod.containers] as Container[]) {
      const file = c.env?.find((e) => e.name === "TOOLGATE_CONFIG")?.value;
      if (file === undefined) continue;
      const mount = c.volumeMounts!.find((m) => m.mountPath === file)!;
      const volume = pod.volumes.find((v: { name: string }) => v.name === mount.name);
      const cm = objs.find(
        (o) => o.kind === "ConfigMap" && o.metadata.name === volume.configMap.name,
      );
      expect(cm).toBeDefined();
      const env: Record<string, string> = {};
      for (const e of c.env!)
        if (e.name.startsWith("TOOLGATE_") && e.name !== "TOOLGATE_CONFIG")
          env[e.name] =
            e.value ?? SECRET_PLACEHOLDERS[e.name] ?? "placeholder-from-a-secret-0123456789";
      out.push({
        deployment: dep.metadata.name,
        container: c.name,
        raw: parseYaml(cm!.data!["config.yaml"]!),
        env,
      });
    }
  }
  return out;
}

const ciValues = readdirSync(join(chart, "ci"))
  .filter((f) => f.endsWith(".yaml"))
  .sort();

function parentChart(): string {
  const dir = mkdtempSync(join(tmpdir(), "toolgate-parent-"));
  cpSync(join(root, "test", "fixtures", "helm", "agent-app"), dir, { recursive: true });
  mkdirSync(join(dir, "charts"));
  cpSync(chart, join(dir, "charts", "toolgate"), { recursive: true });
  return dir;
}

/** The least a control service needs (--set form). */
const FLEET_SETS = [
  "control.enabled=true",
  "control.postgres.existingSecret=toolgate-fleet-postgres",
  "control.jwt.issuer=https://id.example.com",
  "control.jwt.jwksUrl=https://id.example.com/jwks.json",
];

const cases: Array<[string, () => ReturnType<typeof template>]> = [
  ["defaults", () => template()],
  ...ciValues.map((f): [string, () => ReturnType<typeof template>] => [
    f,
    () => template([join(chart, "ci", f)]),
  ]),
  ["parent chart using the toolgate.sidecar template", () => template([], parentChart())],
  [
    "parent chart in fleet mode (toolgate.control.enabled)",
    () =>
      template(
        [],
        parentChart(),
        FLEET_SETS.map((s) => `toolgate.${s}`),
      ),
  ],
];

describe("helm lint --strict", () => {
  test.each(["(defaults)", ...ciValues])("%s", (f) => {
    const r = run(helm, [
      "lint",
      "--strict",
      chart,
      "--kube-version",
      KUBE,
      ...(f.startsWith("(") ? [] : ["-f", join(chart, "ci", f)]),
    ]);
    expect(r.stderr + r.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(r.status).toBe(0);
  });
});

describe("helm template, validated strictly against the Kubernetes API types", () => {
  test.each(cases)("%s", (_name, render) => {
    const r = render();
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const v = run(validator, ["-"], r.stdout);
    expect(v.stdout).toMatch(/object\(s\) valid/);
    expect(v.status).toBe(0);
    // every rendered toolgate config file (the sidecar's; the fleet control
    // service's), with its container's environment (values from Secrets stand
    // in as placeholders), is accepted by toolgate itself
    const configs = toolgateConfigs(objects(r.stdout));
    expect(configs.map((c) => c.container)).toContain("toolgate");
    for (const { raw, env } of configs) expect(() => compileConfig(raw, env)).not.toThrow();
  });

  test("the validator refuses an unknown field, a wrong type and a non-sidecar init container with probes", () => {
    const bad = `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      initContainers:
        - {name: s, image: i, readinessProbe: {exec: {command: [x]}}}
      containers:
        - {name: c, image: i, securityContex: {}}
`;
    const v = run(validator, ["-"], bad);
    expect(v.status).toBe(1);
    expect(v.stdout).toMatch(/unknown field "securityContex"/);
    const v2 = run(
      validator,
      ["-"],
      bad.replace("securityContex: {}", "ports: [{containerPort: 80}]").replace("replicas", "x"),
    );
    expect(v2.stdout).toMatch(
      /probes are only allowed on init containers with restartPolicy Always/,
    );
    const v3 = run(
      validator,
      ["-"],
      'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: "eighty"}]}\n',
    );
    expect(v3.status).toBe(1);
  });
});

describe("the defaults", () => {
  const r = template();
  const objs = objects(r.stdout);
  const dep = objs.find((o) => o.kind === "Deployment")!;
  const pod = dep.spec.template.spec;
  const sidecar = pod.initContainers[0];

  test("golden file (UPDATE_GOLDEN=1 rewrites it)", () => {
    const golden = join(root, "test", "golden", "helm", "defaults.yaml");
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, r.stdout);
    expect(r.stdout).toBe(readFileSync(golden, "utf8"));
  });

  test("toolgate is a native sidecar with safe security settings", () => {
    expect(sidecar.name).toBe("toolgate");
    expect(sidecar.restartPolicy).toBe("Always");
    expect(sidecar.securityContext).toMatchObject({
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(sidecar.readinessProbe.exec.command.join(" ")).toMatch(/\/health\/ready$/);
    expect(sidecar.livenessProbe.exec.command.join(" ")).toMatch(/\/health\/live$/);
    expect(sidecar.resources.limits.memory).toBeDefined();
  });

  test("only the state directory is writable; the agent port and control port stay on loopback", () => {
    const writable = sidecar.volumeMounts.filter((m: { readOnly?: boolean }) => !m.readOnly);
    expect(writable.map((m: { mountPath: string }) => m.mountPath)).toEqual(["/var/lib/toolgate"]);
    const cfg = parseYaml(objs.find((o) => o.kind === "ConfigMap")!.data!["config.yaml"]!);
    expect(cfg.server.agent.host).toBe("127.0.0.1");
    expect(cfg.control.host).toBe("127.0.0.1");
    expect(objs.map((o) => o.kind).sort()).toEqual(["ConfigMap", "Deployment", "ServiceAccount"]);
  });
});

describe("the control port exposed", () => {
  const objs = objects(template([join(chart, "ci", "control-exposed-values.yaml")]).stdout);
  test("Service + NetworkPolicy + ServiceMonitor, http probes on the control port", () => {
    expect(objs.map((o) => o.kind).sort()).toEqual([
      "ConfigMap",
      "Deployment",
      "NetworkPolicy",
      "Service",
      "ServiceAccount",
      "ServiceMonitor",
    ]);
    const np = objs.find((o) => o.kind === "NetworkPolicy")!;
    expect(np.spec.policyTypes).toEqual(["Ingress"]);
    const sidecar = objs.find((o) => o.kind === "Deployment")!.spec.template.spec.initContainers[0];
    expect(sidecar.readinessProbe.httpGet).toEqual({ path: "/health/ready", port: "toolgate-ctl" });
    const sm = objs.find((o) => o.kind === "ServiceMonitor")!;
    expect(sm.spec.endpoints[0]).toMatchObject({ port: "control", path: "/metrics" });
  });

  test("refused without control-port keys (the development key would be trusted)", () => {
    const r = template([], chart, ["toolgate.control.service.enabled=true"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/control port listens beyond loopback/);
  });

  test("an unknown value is refused by values.schema.json", () => {
    const r = template([], chart, ["toolgate.polcy.source=http"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/additional properties 'polcy' not allowed/);
  });
});

describe("the agent port on a Unix domain socket (toolgate.socket.enabled)", () => {
  const r = template([join(chart, "ci", "socket-values.yaml")]);
  const objs = objects(r.stdout);
  const pod = objs.find((o) => o.kind === "Deployment")!.spec.template.spec;
  const sidecar = pod.initContainers[0];
  const agent = pod.containers[0];

  test("golden file (UPDATE_GOLDEN=1 rewrites it)", () => {
    const golden = join(root, "test", "golden", "helm", "socket.yaml");
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, r.stdout);
    expect(r.stdout).toBe(readFileSync(golden, "utf8"));
  });

  test("an emptyDir mounted in toolgate and the agent; the socket in a directory toolgate creates in it", () => {
    expect(pod.volumes).toContainEqual({
      name: "toolgate-socket",
      emptyDir: { medium: "Memory", sizeLimit: "1Mi" },
    });
    const mount = { name: "toolgate-socket", mountPath: "/var/run/toolgate" };
    expect(sidecar.volumeMounts).toContainEqual(mount);
    // the agent keeps its own mounts beside it
    expect(agent.volumeMounts).toEqual([mount, { name: "scratch", mountPath: "/tmp" }]);
    expect(agent.env).toContainEqual({
      name: "TOOLGATE_SOCKET",
      value: "/var/run/toolgate/agent/agent.sock",
    });
    const cfg = parseYaml(objs.find((o) => o.kind === "ConfigMap")!.data!["config.yaml"]!);
    expect(cfg.server.agent).toEqual({
      host: "127.0.0.1",
      port: 8181,
      socket: "/var/run/toolgate/agent/agent.sock",
      socket_mode: "0660",
    });
    const compiled = compileConfig(cfg, {});
    expect(compiled.server.agent.socket).toBe("/var/run/toolgate/agent/agent.sock");
    expect(compiled.server.agent.socketMode).toBe(0o660);
    // probes stay on TCP (kubelet cannot probe a socket)
    expect(sidecar.readinessProbe.exec.command.join(" ")).toContain("http://127.0.0.1:8181/");
  });

  test("a mode that lets others connect is refused by values.schema.json", () => {
    const bad = template([], chart, ["toolgate.socket.enabled=true", "toolgate.socket.mode=0666"]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/socket\.mode|socket\/mode/);
  });

  test("off by default: no socket volume, no TOOLGATE_SOCKET", () => {
    const d = objects(template().stdout).find((o) => o.kind === "Deployment")!.spec.template.spec;
    expect(d.volumes.map((v: { name: string }) => v.name)).not.toContain("toolgate-socket");
    expect(JSON.stringify(d)).not.toContain("TOOLGATE_SOCKET");
  });
});

describe("values.schema.json and the chart README", () => {
  test("additionalProperties: false on every object schema with properties", () => {
    const schema = JSON.parse(readFileSync(join(chart, "values.schema.json"), "utf8"));
    const bad: string[] = [];
    const walk = (s: any, path: string) => {
      if (s === null || typeof s !== "object") return;
      if (s.properties && s.additionalProperties !== false) bad.push(path);
      for (const [k, v] of Object.entries(s)) walk(v, `${path}/${k}`);
    };
    walk(schema, "#");
    expect(bad).toEqual([]);
  });

  test("every key in values.yaml is documented in README.md", () => {
    const values = parseYaml(readFileSync(join(chart, "values.yaml"), "utf8"));
    const readme = readFileSync(join(chart, "README.md"), "utf8");
    const keys: string[] = [];
    const walk = (v: unknown, path: string) => {
      if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length > 0) {
        for (const [k, c] of Object.entries(v)) walk(c, path ? `${path}.${k}` : k);
      } else keys.push(path);
    };
    walk(values, "");
    // nested defaults of Kubernetes passthrough objects are documented by their parent key
    const passthrough =
      /^(agent\.(securityContext|podSecurityContext)|toolgate\.(resources|securityContext)|control\.(resources|securityContext|podSecurityContext))\./;
    const missing = keys.filter((k) => !passthrough.test(k) && !readme.includes("`" + k + "`"));
    expect(missing).toEqual([]);
  });
});

describe("fleet mode: the control service (control.enabled)", () => {
  const r = template([join(chart, "ci", "fleet-control-values.yaml")]);
  const objs = objects(r.stdout);
  const control = objs.find(
    (o) => o.kind === "Deployment" && o.metadata.name === "tg-toolgate-fleet-control",
  )!;
  const agent = objs.find((o) => o.kind === "Deployment" && o.metadata.name === "tg-toolgate")!;
  const cpod = control?.spec.template.spec;
  const main = cpod?.containers.find((c: Container) => c.name === "control");
  const sidecar = agent.spec.template.spec.initContainers.find(
    (c: Container) => c.name === "toolgate",
  );

  test("golden file (UPDATE_GOLDEN=1 rewrites it)", () => {
    expect(r.stderr).toBe("");
    const golden = join(root, "test", "golden", "helm", "control.yaml");
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(golden, r.stdout);
    expect(r.stdout).toBe(readFileSync(golden, "utf8"));
  });

  test("a Deployment of `toolgate control` (2 replicas, same image), a ClusterIP Service, a PDB and a NetworkPolicy", () => {
    expect(control).toBeDefined();
    expect(control.spec.replicas).toBe(2);
    expect(main.args).toEqual(["control"]);
    expect(main.image).toBe(sidecar.image);
    expect(main.ports).toEqual([{ name: "control", containerPort: 8182, protocol: "TCP" }]);
    expect(main.readinessProbe.httpGet).toEqual({ path: "/health/ready", port: "control" });
    expect(main.livenessProbe.httpGet).toEqual({ path: "/health/live", port: "control" });
    expect(main.resources.limits.memory).toBeDefined();
    const svc = objs.find(
      (o) => o.kind === "Service" && o.metadata.name === "tg-toolgate-fleet-control",
    )!;
    expect(svc.spec.type).toBe("ClusterIP");
    expect(svc.spec.ports).toEqual([
      { name: "control", port: 8182, targetPort: "control", protocol: "TCP" },
    ]);
    expect(svc.spec.selector).toEqual(control.spec.selector.matchLabels);
    const pdb = objs.find((o) => o.kind === "PodDisruptionBudget")!;
    expect(pdb.spec).toEqual({ minAvailable: 1, selector: control.spec.selector });
    // no selector of the agent's objects matches the control pods, and vice versa
    const agentSel = agent.spec.selector.matchLabels as Record<string, string>;
    const controlLabels = control.spec.template.metadata.labels as Record<string, string>;
    expect(Object.entries(agentSel).every(([k, v]) => controlLabels[k] === v)).toBe(false);
  });

  test("least privilege: non-root, read-only root fs, no capabilities, RuntimeDefault, no API token", () => {
    expect(cpod.automountServiceAccountToken).toBe(false);
    expect(cpod.enableServiceLinks).toBe(false);
    expect(cpod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    for (const c of [...cpod.initContainers, ...cpod.containers])
      expect(c.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
        seccompProfile: { type: "RuntimeDefault" },
      });
    const sa = objs.find(
      (o) => o.kind === "ServiceAccount" && o.metadata.name === cpod.serviceAccountName,
    )!;
    expect((sa as any).automountServiceAccountToken).toBe(false);
  });

  test("migrations run first in an init container; the PostgreSQL URL comes from the existing Secret", () => {
    expect(cpod.initContainers.map((c: Container) => [c.name, c.args])).toEqual([
      ["migrate", ["control", "migrate"]],
    ]);
    const ref = {
      name: "TOOLGATE_POSTGRES_URL",
      valueFrom: { secretKeyRef: { name: "toolgate-fleet-postgres", key: "url" } },
    };
    expect(main.env).toContainEqual(ref);
    expect(cpod.initContainers[0].env).toContainEqual(ref);
    const cm = objs.find(
      (o) => o.kind === "ConfigMap" && o.metadata.name === "tg-toolgate-fleet-control",
    )!;
    expect(cm.data!["config.yaml"]).not.toMatch(/postgres:\/\//);
  });

  test("the control config: people's tokens (control.jwt), sidecar credentials as Kubernetes service-account tokens (fleet.jwt); accepted by compileConfig", () => {
    const cfgs = toolgateConfigs(objs).filter((c) => c.deployment === "tg-toolgate-fleet-control");
    expect(cfgs.map((c) => c.container)).toEqual(["migrate", "control"]);
    const compiled = compileConfig(cfgs[1]!.raw, cfgs[1]!.env);
    expect(compiled.control).toMatchObject({
      enabled: true,
      host: "0.0.0.0",
      port: 8182,
      adminRole: "toolgate-admin",
    });
    expect(compiled.control.jwt).toMatchObject({
      issuer: "https://id.example.com",
      audience: "toolgate-control",
      keys: { kind: "jwks_url", value: "https://id.example.com/.well-known/jwks.json" },
      dev: false,
    });
    expect(compiled.fleet.postgresUrl).toBe(SECRET_PLACEHOLDERS.TOOLGATE_POSTGRES_URL);
    expect(compiled.fleet.jwt).toMatchObject({
      issuer: "https://kubernetes.default.svc.cluster.local",
      audience: "toolgate-fleet",
      keys: { kind: "jwks_url", value: "https://kubernetes.default.svc/openid/v1/jwks" },
      agentClaim: "kubernetes.io/serviceaccount/name",
      dev: false,
    });
    // the approver console: OIDC login, one session key for every replica, secrets as files
    expect(compiled.console).toMatchObject({
      enabled: true,
      publicUrl: "https://toolgate.example.com",
      sessionKeyFile: "/etc/toolgate/secrets/console-session.key",
      oidc: {
        issuer: "https://id.example.com",
        clientId: "toolgate-console",
        clientSecretFile: "/etc/toolgate/secrets/console-client-secret",
      },
    });
    const secrets = cpod.volumes.find((v: { name: string }) => v.name === "secrets");
    expect(secrets.projected.sources).toEqual(
      expect.arrayContaining([
        {
          secret: {
            name: "toolgate-console-session",
            items: [{ key: "session.key", path: "console-session.key" }],
          },
        },
        {
          secret: {
            name: "toolgate-console-oidc",
            items: [{ key: "client-secret", path: "console-client-secret" }],
          },
        },
      ]),
    );
    // the API server's certificate is signed by the cluster CA
    expect(main.env).toContainEqual({
      name: "NODE_EXTRA_CA_CERTS",
      value: "/etc/toolgate/kube-ca/ca.crt",
    });
    expect(cpod.volumes).toContainEqual({
      name: "kube-ca",
      configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] },
    });
  });

  test("the sidecar joins the fleet: TOOLGATE_FLEET_URL, a projected service-account token, a service account named after the agent", () => {
    const pod = agent.spec.template.spec;
    expect(sidecar.env).toContainEqual({
      name: "TOOLGATE_FLEET_URL",
      value: "http://tg-toolgate-fleet-control.agents.svc:8182",
    });
    expect(sidecar.env).toContainEqual({
      name: "TOOLGATE_FLEET_CREDENTIAL_FILE",
      value: "/var/run/secrets/toolgate/fleet/token",
    });
    expect(sidecar.volumeMounts).toContainEqual({
      name: "toolgate-fleet-token",
      mountPath: "/var/run/secrets/toolgate/fleet",
      readOnly: true,
    });
    expect(pod.volumes).toContainEqual({
      name: "toolgate-fleet-token",
      projected: {
        sources: [
          {
            serviceAccountToken: {
              audience: "toolgate-fleet",
              expirationSeconds: 3600,
              path: "token",
            },
          },
        ],
      },
    });
    expect(pod.serviceAccountName).toBe("support-triage");
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(agent.spec.template.metadata.labels["toolgate-fleet-sidecar"]).toBe("true");
    const cfg = toolgateConfigs(objs).find((c) => c.container === "toolgate")!;
    const compiled = compileConfig(cfg.raw, cfg.env);
    expect(compiled.fleet).toMatchObject({
      url: "http://tg-toolgate-fleet-control.agents.svc:8182",
      credentialFile: "/var/run/secrets/toolgate/fleet/token",
    });
  });

  test("NetworkPolicies: the control pods admit sidecars and operators only and reach PostgreSQL, DNS and the JWKS; the agent pod may reach the control service", () => {
    const np = objs.find(
      (o) => o.kind === "NetworkPolicy" && o.metadata.name === "tg-toolgate-fleet-control",
    )!;
    expect(np.spec.podSelector).toEqual(control.spec.selector);
    expect(np.spec.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(np.spec.ingress.map((r: { from: unknown }) => r.from)).toEqual([
      [{ podSelector: { matchLabels: { "toolgate-fleet-sidecar": "true" } } }],
      [
        {
          namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "approvals" } },
          podSelector: { matchLabels: { "app.kubernetes.io/name": "approvals-ui" } },
        },
      ],
    ]);
    expect(np.spec.egress[0]).toEqual({
      ports: [{ port: 5432, protocol: "TCP" }],
      to: [{ ipBlock: { cidr: "10.20.0.0/24" } }],
    });
    expect(np.spec.egress[1].ports.map((p: { port: number }) => p.port)).toEqual([53, 53]);
    const eg = objs.find(
      (o) => o.kind === "NetworkPolicy" && o.metadata.name === "tg-toolgate-egress",
    )!;
    expect(eg.spec.podSelector.matchLabels).toEqual(agent.spec.selector.matchLabels);
    expect(eg.spec.egress).toContainEqual({
      to: [{ podSelector: { matchLabels: control.spec.selector.matchLabels } }],
      ports: [{ port: 8182, protocol: "TCP" }],
    });
  });

  test("the parent chart's pod joins the fleet through the toolgate.* templates", () => {
    const p = objects(
      template(
        [],
        parentChart(),
        FLEET_SETS.map((s) => `toolgate.${s}`),
      ).stdout,
    );
    const pod = p.find((o) => o.kind === "Deployment" && o.metadata.name === "tg-agent")!.spec
      .template;
    const sc = pod.spec.initContainers.find((c: Container) => c.name === "toolgate");
    expect(sc.env).toContainEqual({
      name: "TOOLGATE_FLEET_URL",
      value: "http://tg-toolgate-fleet-control.agents.svc:8182",
    });
    expect(pod.spec.volumes.map((v: { name: string }) => v.name)).toContain("toolgate-fleet-token");
    expect(pod.spec.serviceAccountName).toBe("billing-assistant");
    expect(pod.metadata.labels["toolgate-fleet-sidecar"]).toBe("true");
    expect(
      p.some((o) => o.kind === "Deployment" && o.metadata.name === "tg-toolgate-fleet-control"),
    ).toBe(true);
  });

  test("sidecar keys from a JWKS ConfigMap instead of the API server (no cluster CA mounted)", () => {
    const j = objects(
      template([], chart, [...FLEET_SETS, "control.sidecarAuth.jwksConfigMap.name=cluster-jwks"])
        .stdout,
    );
    const cfg = toolgateConfigs(j).find((c) => c.container === "control")!;
    expect(compileConfig(cfg.raw, cfg.env).fleet.jwt.keys).toEqual({
      kind: "jwks_file",
      value: "/etc/toolgate/secrets/fleet-jwks.json",
    });
    const pod = j.find(
      (o) => o.metadata.name === "tg-toolgate-fleet-control" && o.kind === "Deployment",
    )!.spec.template.spec;
    expect(pod.volumes.map((v: { name: string }) => v.name)).toEqual(["config", "tmp", "secrets"]);
    expect(pod.containers[0].env.map((e: { name: string }) => e.name)).not.toContain(
      "NODE_EXTRA_CA_CERTS",
    );
  });

  test("an external control service (toolgate.fleet.url) puts the sidecar in fleet mode without deploying one", () => {
    const e = objects(
      template([], chart, ["toolgate.fleet.url=https://control.fleet.example:8182"]).stdout,
    );
    expect(e.filter((o) => o.kind === "Deployment").map((o) => o.metadata.name)).toEqual([
      "tg-toolgate",
    ]);
    const sc = e.find((o) => o.kind === "Deployment")!.spec.template.spec.initContainers[0];
    expect(sc.env).toContainEqual({
      name: "TOOLGATE_FLEET_URL",
      value: "https://control.fleet.example:8182",
    });
  });

  test.each([
    [
      [],
      /control\.enabled needs control\.postgres\.existingSecret: the name of an existing Secret/,
    ],
    [
      ["control.postgres.existingSecret=pg"],
      /control\.enabled needs keys for people's tokens: set control\.jwt\.jwksUrl or control\.jwt\.publicKeySecret\.name/,
    ],
    [
      [...FLEET_SETS.slice(1), "control.replicas=1"],
      /control\.pdb\.minAvailable \(1\) must be below control\.replicas \(1\)/,
    ],
    [
      [...FLEET_SETS.slice(1), "serviceAccount.name=agents"],
      /the pod's service account must be named "support-triage"/,
    ],
    [
      [...FLEET_SETS.slice(1), "control.console.oidc.issuer=https://id.example.com"],
      /control\.console\.oidc\.issuer with 2 control replicas needs control\.console\.sessionKeySecret\.name/,
    ],
  ])("control.enabled refused with a clear message: %j", (sets, message) => {
    const r = template([], chart, ["control.enabled=true", ...sets]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });
});
