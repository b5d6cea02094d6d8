import { createHash } from "node:crypto";
import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { rethrowAs } from "../errors";
import { parseUntrustedJson } from "../shared/guards";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "../shared/paths";

/** What is kept beside the persisted bundle bytes. */
export interface PersistedMeta {
  source: string;
  name: string;
  revision: string;
  etag: string | null;
  sha256: string;
  saved_at: string;
}

function writeAtomic(path: string, data: Buffer | string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE); // whatever the umask, or a leftover temporary file's mode
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  }
}

/**
 * The last activated bundle of one source, on disk: `bundle.tar.gz` and
 * `bundle.json` (metadata) in a directory named after the source, each
 * written to a temporary file, fsynced and renamed into place. The metadata
 * is written last and names the bundle's SHA-256, so a crash between the two
 * renames leaves a copy that is detected as inconsistent, never a wrong one.
 */
export class BundleStore {
  readonly dir: string;

  constructor(
    private readonly root: string,
    source: string,
  ) {
    const key = createHash("sha256").update(source).digest("hex").slice(0, 16);
    this.dir = join(root, key);
  }

  get bundlePath(): string {
    return join(this.dir, "bundle.tar.gz");
  }

  save(bytes: Buffer, meta: Omit<PersistedMeta, "sha256" | "saved_at">): PersistedMeta {
    const full: PersistedMeta = {
      ...meta,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      saved_at: new Date().toISOString(),
    };
    rethrowAs("bundle_persist_failed", `cannot persist the bundle to ${this.dir}`, () => {
      ensurePrivateDir(this.root);
      ensurePrivateDir(this.dir);
      writeAtomic(this.bundlePath, bytes);
      writeAtomic(join(this.dir, "bundle.json"), JSON.stringify(full, null, 2) + "\n");
      fsyncDir(this.dir);
    });
    return full;
  }

  /** The persisted copy, or undefined if there is none; throws if it is damaged. */
  load(): { bytes: Buffer; meta: PersistedMeta } | undefined {
    let metaText: string;
    try {
      metaText = readFileSync(join(this.dir, "bundle.json"), "utf8");
    } catch {
      return undefined;
    }
    return rethrowAs("bundle_persist_failed", `the persisted bundle in ${this.dir} is damaged`, () => {
      const meta = parseUntrustedJson(metaText) as PersistedMeta;
      const bytes = readFileSync(this.bundlePath);
      if (createHash("sha256").update(bytes).digest("hex") !== meta.sha256) {
        throw new Error("bundle.tar.gz does not match the digest in bundle.json");
      }
      return { bytes, meta };
    });
  }
}
