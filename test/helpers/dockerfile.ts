/**
 * A small Dockerfile reader for tests that check the image without a Docker
 * daemon: instructions per stage, with line continuations joined, and the
 * exec-form (JSON) or shell-form arguments of each.
 */
import { readFileSync } from "node:fs";

export interface Instruction {
  op: string;
  args: string;
  line: number;
}

export interface Stage {
  name: string | undefined;
  from: string;
  instructions: Instruction[];
}

export function parseDockerfile(path: string): { args: Record<string, string>; stages: Stage[] } {
  const lines = readFileSync(path, "utf8").split("\n");
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  let buf = "";
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? "";
    if (buf === "" && /^\s*(#.*)?$/.test(raw)) continue;
    if (buf !== "" && /^\s*#/.test(raw)) continue; // comment inside a continuation
    if (buf === "") start = i + 1;
    if (/\\\s*$/.test(raw)) {
      buf += raw.replace(/\\\s*$/, " ");
      continue;
    }
    const text = (buf + raw).trim();
    buf = "";
    const m = /^(\w+)\s+([\s\S]*)$/.exec(text);
    if (!m) throw new Error(`${path}:${start}: cannot parse "${text}"`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    if (op === "FROM") {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (!f) throw new Error(`${path}:${start}: bad FROM`);
      stages.push({ name: f[2], from: substitute(f[1]!, args), instructions: [] });
    } else if (op === "ARG" && stages.length === 0) {
      const [k, v] = rest.split("=", 2) as [string, string | undefined];
      args[k] = v ?? "";
    } else {
      const stage = stages[stages.length - 1];
      if (!stage) throw new Error(`${path}:${start}: ${op} before FROM`);
      stage.instructions.push({ op, args: rest, line: start });
    }
  }
  return { args, stages };
}

function substitute(s: string, args: Record<string, string>): string {
  return s.replace(
    /\$\{(\w+)\}|\$(\w+)/g,
    (_, a: string | undefined, b: string | undefined) => args[(a ?? b)!] ?? "",
  );
}

/** Exec form (JSON array) or shell form (split on whitespace, ["sh","-c",…] not needed here). */
export function execForm(args: string): string[] {
  if (args.startsWith("[")) return JSON.parse(args) as string[];
  return ["/bin/sh", "-c", args];
}

/** ENV k=v [k2=v2 …] (also the legacy `ENV k v`), values unquoted. */
export function parseEnv(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!args.includes("=")) {
    const [k, ...v] = args.split(/\s+/);
    out[k!] = v.join(" ");
    return out;
  }
  const re = /(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (const m of args.matchAll(re)) {
    const v = m[2]!;
    out[m[1]!] = v.startsWith('"') ? (JSON.parse(v) as string) : v;
  }
  return out;
}

/** COPY [--from=x] [--chown=…] src… dest */
export function parseCopy(args: string): {
  from: string | undefined;
  sources: string[];
  dest: string;
} {
  const parts = args.startsWith("[") ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  let from: string | undefined;
  const rest: string[] = [];
  for (const p of parts) {
    const f = /^--from=(\S+)$/.exec(p);
    if (f) from = f[1];
    else if (!p.startsWith("--")) rest.push(p);
  }
  const dest = rest.pop();
  if (dest === undefined || rest.length === 0)
    throw new Error(`COPY needs sources and a destination: ${args}`);
  return { from, sources: rest, dest };
}
