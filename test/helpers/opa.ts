import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const root = join(__dirname, "..", "..");
let opa: string | undefined;

/** The pinned opa CLI (built once into .tools/bin by scripts/tools.sh). */
export function opaPath(): string {
  opa ??= execFileSync("bash", [join(root, "scripts", "tools.sh"), "opa"], {
    encoding: "utf8",
  }).trim();
  return opa;
}

export function tempDir(prefix = "toolgate-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Builds a wasm bundle from the given sources with the real `opa build`, and
 * returns the path of the .tar.gz.
 */
export function buildWasmBundle(
  files: Record<string, string>,
  opts: { entrypoints?: string[]; revision?: string; name?: string; capabilities?: boolean } = {},
): string {
  const dir = tempDir();
  const src = join(dir, "src");
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(src, path)), { recursive: true });
    writeFileSync(join(src, path), text);
  }
  const out = join(dir, `${opts.name ?? "fixture"}.tar.gz`);
  const args = ["build", "-t", "wasm", "-o", out, "--revision", opts.revision ?? "fixture-1"];
  for (const e of opts.entrypoints ?? ["toolgate/decision"]) args.push("-e", e);
  if (opts.capabilities !== false)
    args.push("--capabilities", join(root, "rego", "capabilities.json"));
  args.push(src);
  execFileSync(opaPath(), args, { stdio: "pipe" });
  return out;
}
