import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

let root: string | undefined;

/** The package's root directory (where package.json names "toolgate"), from src/ or dist/src/. */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = __dirname;
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      const name = (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name;
      if (name === "toolgate") return (root = dir);
    }
    const up = dirname(dir);
    if (up === dir) throw new Error("toolgate: cannot find the package root from " + __dirname);
    dir = up;
  }
}

/** The reference bundle embedded in the package. */
export function defaultBundlePath(): string {
  return join(packageRoot(), "bundles", "support-triage.tar.gz");
}

/** The committed development signing key pair (config/dev/, development only). */
export function devPublicKeyPath(): string {
  return join(packageRoot(), "config", "dev", "dev-signing-key.pub.pem");
}

export function devPrivateKeyPath(): string {
  return join(packageRoot(), "config", "dev", "dev-signing-key.pem");
}
