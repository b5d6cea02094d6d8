import { gunzipSync } from "node:zlib";
import { toolgateError } from "../errors";

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

function readString(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start);
  const stop = end === -1 || end > start + len ? start + len : end;
  return buf.toString("utf8", start, stop);
}

function readOctal(buf: Buffer, start: number, len: number): number {
  const text = readString(buf, start, len).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text))
    throw toolgateError("bundle_unreadable", `bad octal field "${text}" in tar header`);
  return parseInt(text, 8);
}

function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length) {
    const space = body.indexOf(0x20, i);
    if (space === -1) break;
    const len = parseInt(body.toString("utf8", i, space), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const record = body.toString("utf8", space + 1, i + len - 1);
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}

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

/**
 * Reads a gzipped tar archive into a map of path -> contents. Only regular
 * files are kept; directories are skipped; links and devices are refused.
 */
export function readTarGz(
  gz: Buffer,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Map<string, Buffer> {
  let tar: Buffer;
  try {
    tar = gunzipSync(gz, { maxOutputLength: limits.maxBytes });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/maxOutputLength|buffer/i.test(msg) && !/incorrect header/i.test(msg)) {
      throw toolgateError(
        "bundle_too_large",
        `bundle archive exceeds ${limits.maxBytes} bytes uncompressed`,
        { cause: e },
      );
    }
    throw toolgateError("bundle_unreadable", `bundle is not a gzip archive: ${msg}`, { cause: e });
  }
  const files = new Map<string, Buffer>();
  let offset = 0;
  let longName: string | undefined;
  let pax: Record<string, string> = {};
  while (offset + BLOCK <= tar.length) {
    const header = tar.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break; // end of archive
    const storedSum = readOctal(header, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
    if (sum !== storedSum) throw toolgateError("bundle_unreadable", "tar header checksum mismatch");
    const size = readOctal(header, 124, 12);
    const type = String.fromCharCode(header[156] ?? 0);
    const magic = readString(header, 257, 6);
    const prefix = magic.startsWith("ustar") ? readString(header, 345, 155) : "";
    const baseName = readString(header, 0, 100);
    const bodyStart = offset + BLOCK;
    const bodyEnd = bodyStart + size;
    if (bodyEnd > tar.length) throw toolgateError("bundle_unreadable", "tar archive is truncated");
    const body = tar.subarray(bodyStart, bodyEnd);
    offset = bodyStart + Math.ceil(size / BLOCK) * BLOCK;

    if (type === "x") {
      pax = parsePax(body);
      continue;
    }
    if (type === "g") continue; // global pax header: nothing we use
    if (type === "L") {
      longName = readString(body, 0, body.length);
      continue;
    }
    const name = pax.path ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
    longName = undefined;
    pax = {};
    if (type === "5") continue; // directory
    if (type !== "0" && type !== "\0" && type !== "7") {
      throw toolgateError(
        "bundle_unreadable",
        `archive member "${name}" is not a regular file (type ${JSON.stringify(type)})`,
      );
    }
    const path = normalizeMemberPath(name);
    if (files.has(path)) throw toolgateError("bundle_unreadable", `archive has "${path}" twice`);
    files.set(path, Buffer.from(body));
    if (files.size > limits.maxFiles) {
      throw toolgateError("bundle_too_large", `bundle has more than ${limits.maxFiles} files`);
    }
  }
  return files;
}
