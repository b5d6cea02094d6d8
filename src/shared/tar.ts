/**
 * The one tar.gz codec: bundles are read (from disk, a download, the
 * persisted copy) and written (`toolgate policy sign`) here, on the
 * `tar-stream` package's parser and packer, gzip by node:zlib.
 *
 * Reading takes untrusted input and keeps these limits (codes in brackets):
 * - the whole archive, uncompressed, at most `maxBytes` — a gzip bomb stops
 *   there [bundle_too_large]; at most `maxFiles` files [bundle_too_large];
 * - only regular files are kept, directories skipped; links, devices, fifos
 *   and unknown member types are refused [bundle_unreadable];
 * - member paths are normalised to "/a/b.json" and one that escapes the root
 *   ("..") is refused, as is a path that comes twice [bundle_unreadable];
 * - a damaged archive (not gzip, a bad header checksum, truncated) is
 *   refused [bundle_unreadable];
 * - the archive ends at its first all-zero block, as OPA's reader (Go's
 *   archive/tar) ends it: what follows (another archive concatenated, padding)
 *   is not read.
 */
import { gunzipSync, gzipSync } from "node:zlib";
import { extract, pack, type Header } from "tar-stream";
import { isToolgateError, toolgateError } from "../errors";

/** Limits that keep a hostile archive from exhausting memory. */
export interface ArchiveLimits {
  /** Largest allowed uncompressed size of the whole archive, in bytes. */
  maxBytes: number;
  /** Largest number of files. */
  maxFiles: number;
}

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = {
  maxBytes: 64 * 1024 * 1024,
  maxFiles: 10_000,
};

const BLOCK = 512;

/**
 * Normalises an archive member path to the bundle form "/a/b.json" and
 * refuses anything that could escape the bundle root.
 */
export function normalizeMemberPath(name: string): string {
  const parts = name
    .replace(/\\/g, "/")
    .split("/")
    .filter((p) => p !== "" && p !== ".");
  if (parts.some((p) => p === "..")) {
    throw toolgateError("bundle_unreadable", `archive member "${name}" escapes the bundle root`);
  }
  return "/" + parts.join("/");
}

function gunzip(gz: Buffer, maxBytes: number): Buffer {
  try {
    return gunzipSync(gz, { maxOutputLength: maxBytes });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/maxOutputLength|buffer/i.test(msg) && !/incorrect header/i.test(msg)) {
      throw toolgateError(
        "bundle_too_large",
        `bundle archive exceeds ${maxBytes} bytes uncompressed`,
        { cause: e },
      );
    }
    throw toolgateError("bundle_unreadable", `bundle is not a gzip archive: ${msg}`, { cause: e });
  }
}

function isZeroBlock(tar: Buffer, at: number): boolean {
  if (at + BLOCK > tar.length) return false;
  for (let i = at; i < at + BLOCK; i++) if (tar[i] !== 0) return false;
  return true;
}

/**
 * Reads a gzipped tar archive into a map of bundle path -> contents, within
 * `limits` (see the module comment for what is refused).
 */
export async function readTarGz(
  gz: Buffer,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Promise<Map<string, Buffer>> {
  const tar = gunzip(gz, limits.maxBytes);
  const files = new Map<string, Buffer>();
  if (isZeroBlock(tar, 0)) return files;
  // v7 headers (no ustar magic) are read too, as before; tar-stream's types omit the option
  const options: Parameters<typeof extract>[0] & { allowUnknownFormat: boolean } = {
    allowUnknownFormat: true,
  };
  const reader = extract(options);
  reader.end(tar);
  try {
    for await (const entry of reader) {
      // at run time: type null for an unknown type flag, linkname null when none,
      // byteOffset where the member's contents start in `tar`
      const h = entry.header as Omit<Header, "type" | "linkname"> & {
        type: Header["type"] | null;
        linkname: string | null;
        byteOffset?: number;
      };
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      if (h.type === "file" || h.type === "contiguous-file") {
        if (h.linkname) {
          throw toolgateError("bundle_unreadable", `archive member "${h.name}" names a link`);
        }
        const path = normalizeMemberPath(h.name);
        if (files.has(path))
          throw toolgateError("bundle_unreadable", `archive has "${path}" twice`);
        files.set(path, Buffer.concat(chunks));
        if (files.size > limits.maxFiles) {
          throw toolgateError("bundle_too_large", `bundle has more than ${limits.maxFiles} files`);
        }
      } else if (h.type !== "directory") {
        throw toolgateError(
          "bundle_unreadable",
          `archive member "${h.name}" is not a regular file (${h.type ?? "unknown type"})`,
        );
      }
      // the end of the archive: nothing after its first zero block is read
      const next = (h.byteOffset ?? NaN) + Math.ceil(h.size / BLOCK) * BLOCK;
      if (isZeroBlock(tar, next)) break;
    }
  } catch (e) {
    if (isToolgateError(e)) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    throw toolgateError("bundle_unreadable", `bundle is not a readable tar archive: ${msg}`, {
      cause: e,
    });
  } finally {
    reader.destroy();
  }
  return files;
}

/**
 * Writes bundle files (by bundle path, "/data.json") as a gzipped tar archive
 * with member names as `opa build` writes them ("/data.json"): ustar headers
 * (a long name split into prefix and name at a "/"; a pax header where no
 * split fits), mode 0600, owner 0, time 0, so the same files give the same
 * bytes.
 */
export async function writeTarGz(files: Map<string, Buffer>): Promise<Buffer> {
  const writer = pack();
  const out: Buffer[] = [];
  const done = (async () => {
    for await (const chunk of writer) out.push(chunk as Buffer);
  })();
  for (const [name, body] of files) {
    await new Promise<void>((resolve, reject) =>
      writer.entry(
        { name, size: body.length, mode: 0o600, mtime: new Date(0), uid: 0, gid: 0, type: "file" },
        body,
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  writer.finalize();
  await done;
  return gzipSync(Buffer.concat(out));
}
