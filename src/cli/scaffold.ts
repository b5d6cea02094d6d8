import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { parseArgs } from "node:util";
import { toolgateError } from "../errors";
import { packageRoot } from "../shared/paths";

type Out = { stdout(s: string): void; stderr(s: string): void };

export const POLICY_INIT_HELP = `  toolgate policy init <DIR> [--agent ID]
                                             scaffold a deployment in DIR (new, or empty but for .git):
                                             data (tools, users, roles, agents, grants, labels), a rule
                                             and its tests, a Regal config; passes \`toolgate policy test DIR\``;

/** Where `policy init` copies from (shipped with the package). */
export function templateDir(): string {
  return join(packageRoot(), "templates", "policy-init");
}

/** The placeholder agent id in the templates, replaced by --agent. */
const TEMPLATE_AGENT = "my-agent";

/** An agent id that is safe inside JSON, Rego strings and Markdown as it is. */
const AGENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function walk(dir: string, acc: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, acc);
    else if (e.isFile()) acc.push(p);
  }
  return acc.sort();
}

/**
 * toolgate's Rego library as the package ships it: the .rego files under
 * rego/toolgate, without its tests and without the reference deployment's
 * data (rego/toolgate/deployment).
 */
export function libraryFiles(): string[] {
  const root = join(packageRoot(), "rego", "toolgate");
  if (!existsSync(root))
    throw toolgateError(
      "internal_error",
      `toolgate's Rego library is missing from the package (${root}): reinstall toolgate`,
    );
  return walk(root).filter(
    (f) =>
      f.endsWith(".rego") &&
      !f.endsWith("_test.rego") &&
      !relative(root, f).split(sep).includes("deployment"),
  );
}

/** The capabilities of toolgate's wasm runtime, as the package ships them. */
export function runtimeCapabilities(): string | undefined {
  const f = join(packageRoot(), "rego", "capabilities.json");
  return existsSync(f) ? f : undefined;
}

const PACKAGE_TOOLGATE = /^package\s+toolgate\s*(#.*)?$/m;
const DEFINES_DECISION = /^decision\s*(:=|=|if\b|\{)/m;

/**
 * Whether DIR brings its own decision (a Rego file, not a test, of package
 * `toolgate` defining `decision`: the repo's rego/, a fork of the library);
 * otherwise the commands that run Rego add toolgate's library to DIR.
 */
export function providesDecision(dir: string): boolean {
  return walk(dir).some((f) => {
    if (!f.endsWith(".rego") || f.endsWith("_test.rego")) return false;
    const text = readFileSync(f, "utf8");
    return PACKAGE_TOOLGATE.test(text) && DEFINES_DECISION.test(text);
  });
}

/** The Regal config for DIR: the nearest .regal/config.yaml (or .regal.yaml) up from DIR, else the scaffold's. */
export function regalConfigFor(dir: string): string {
  for (let d = resolve(dir); ;) {
    for (const c of [join(d, ".regal", "config.yaml"), join(d, ".regal.yaml")])
      if (existsSync(c) && statSync(c).isFile()) return c;
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  return join(templateDir(), ".regal", "config.yaml");
}

/** Entries that do not make a directory "not empty" for init (a fresh `git init`). */
const IGNORED_ENTRIES = new Set([".git"]);

/** `toolgate policy init <DIR> [--agent ID]` */
export function policyInit(args: string[], out: Out): number {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { agent: { type: "string" } },
    strict: true,
  });
  if (positionals.length !== 1)
    throw toolgateError("usage", "policy init needs one <DIR>, the directory to scaffold");
  const dir = resolve(positionals[0] as string);
  const agent = values.agent ?? TEMPLATE_AGENT;
  if (!AGENT_ID.test(agent))
    throw toolgateError(
      "usage",
      `--agent must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit), not ${JSON.stringify(agent)}`,
    );
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory())
      throw toolgateError("usage", `${dir} exists and is not a directory`);
    const present = readdirSync(dir).filter((e) => !IGNORED_ENTRIES.has(e));
    if (present.length > 0)
      throw toolgateError(
        "usage",
        `${dir} is not empty (${present.slice(0, 3).join(", ")}${present.length > 3 ? ", …" : ""}): ` +
          "policy init writes only into a new or empty directory, so that it never overwrites a deployment",
      );
  }
  const templates = templateDir();
  if (!existsSync(templates))
    throw toolgateError(
      "internal_error",
      `the scaffold is missing from the package (${templates}): reinstall toolgate`,
    );
  const written: string[] = [];
  for (const src of walk(templates)) {
    const rel = relative(templates, src);
    const dest = join(dir, rel);
    mkdirSync(dirname(dest), { recursive: true });
    const text = readFileSync(src, "utf8").split(TEMPLATE_AGENT).join(agent);
    // wx: never through a file or link that appeared meanwhile
    writeFileSync(dest, text, { flag: "wx" });
    written.push(rel.split(sep).join("/"));
  }
  const shown = relative(process.cwd(), dir) || ".";
  out.stdout(
    `scaffolded ${dir} (agent '${agent}'):\n${written.map((f) => `  ${f}\n`).join("")}` +
      `next:\n  npx toolgate policy test ${shown}\n  npx toolgate policy build ${shown} -o bundle.tar.gz\n` +
      `  (${shown}/README.md says what each file is for)\n`,
  );
  return 0;
}
