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

const cases: Array<[string, () => ReturnType<typeof template>]> = [
  ["defaults", () => template()],
  ...ciValues.map((f): [string, () => ReturnType<typeof template>] => [
    f,
    () => template([join(chart, "ci", f)]),
  ]),
  ["parent chart using the toolgate.sidecar template", () => template([], parentChart())],
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
    // the rendered toolgate config file, with the sidecar's environment (values
    // from Secrets stand in as placeholders), is accepted by toolgate itself
    const objs = objects(r.stdout);
    const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-config"));
    expect(cm).toBeDefined();
    const pod = objs.find((o) => o.kind === "Deployment")!.spec.template.spec;
    const sidecar = pod.initContainers.find((c: { name: string }) => c.name === "toolgate");
    const env: Record<string, string> = {};
    for (const e of sidecar.env as Array<{ name: string; value?: string }>)
      if (e.name.startsWith("TOOLGATE_") && e.name !== "TOOLGATE_CONFIG")
        env[e.name] = e.value ?? "placeholder-from-a-secret-0123456789";
    expect(() => compileConfig(parseYaml(cm!.data!["config.yaml"]!), env)).not.toThrow();
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
      /^(agent\.(securityContext|podSecurityContext)|toolgate\.(resources|securityContext))\./;
    const missing = keys.filter((k) => !passthrough.test(k) && !readme.includes("`" + k + "`"));
    expect(missing).toEqual([]);
  });
});
