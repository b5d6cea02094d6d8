/**
 * Where a trail's files are: `trail-000001.jsonl`, `trail-000002.jsonl`, ...
 * in one directory, ordered by number; and the one expander from what a
 * user names (files and directories) to the files to read, in order.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { toolgateError } from "../errors";

const FILE_RE = /^trail-(\d{6,})\.jsonl$/;

export function trailFileName(index: number): string {
  return `trail-${String(index).padStart(6, "0")}.jsonl`;
}

/** The number of a trail file's name (`trail-000042.jsonl` → 42), or undefined for any other name. */
export function trailFileIndex(name: string): number | undefined {
  const m = FILE_RE.exec(name);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** The trail files of `dir`, oldest first (by number, not by name). */
export function listTrailFiles(dir: string): string[] {
  return readdirSync(dir)
    .flatMap((name) => {
      const index = trailFileIndex(name);
      return index === undefined ? [] : [{ name, index }];
    })
    .sort((a, b) => a.index - b.index)
    .map((f) => join(dir, f.name));
}

export interface ExpandOptions {
  /**
   * A directory without trail files is an error (`toolgate audit verify`);
   * otherwise it stands for no files (the rollout report, replay).
   */
  requireFiles?: boolean;
}

/**
 * The files of a trail named by `paths`, in the order given: a file stands
 * for itself, a directory for its trail-*.jsonl files by number. Throws
 * `audit_trail_unreadable` for a path that cannot be stat'ed.
 */
export function expandTrailPaths(paths: readonly string[], opts: ExpandOptions = {}): string[] {
  const out: string[] = [];
  for (const path of paths) {
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch (e) {
      throw toolgateError("audit_trail_unreadable", `${path}: ${(e as Error).message}`);
    }
    if (!isDir) out.push(path);
    else {
      const files = listTrailFiles(path);
      if (files.length === 0 && opts.requireFiles)
        throw toolgateError("audit_trail_unreadable", `${path}: no trail-*.jsonl files`);
      out.push(...files);
    }
  }
  return out;
}
