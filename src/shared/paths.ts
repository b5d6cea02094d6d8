import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
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

/** The mode of every directory toolgate keeps state in (the state directory, the trail's, persisted bundles'). */
export const PRIVATE_DIR_MODE = 0o700;
/** The mode of every file toolgate writes state to (databases and their -wal/-shm, trail files, persisted bundles). */
export const PRIVATE_FILE_MODE = 0o600;

/**
 * Creates `dir` (and missing parents) owner-only, and makes it exactly 0700
 * whatever the umask — also when it already exists, e.g. left 0755 by an
 * older version. A directory owned by another user (say, a volume root) is
 * left as it is (chmod would fail): the files in it are still 0600.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const st = statSync(dir);
  if ((st.mode & 0o777) === PRIVATE_DIR_MODE) return;
  if (typeof process.getuid === "function" && st.uid !== process.getuid()) return;
  chmodSync(dir, PRIVATE_DIR_MODE);
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

/** This package's version (package.json). */
export function packageVersion(): string {
  return (
    JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string }
  ).version;
}
