import { readFileSync, readdirSync, statSync } from "node:fs";
import { basename, join, relative, sep } from "node:path";
import { parseYaml } from "../shared/yaml";
import { toolgateError, rethrowAs } from "../errors";
import {
  describeForbiddenKey,
  FORBIDDEN_KEYS,
  forbiddenKey,
  hasOwn,
  isObject,
  parseJsonOr,
} from "../shared/guards";
import {
  DEFAULT_ARCHIVE_LIMITS,
  normalizeMemberPath,
  readTarGz,
  type ArchiveLimits,
} from "../shared/tar";

export interface WasmEntry {
  entrypoint: string;
  module: string;
}

export interface Manifest {
  revision: string;
  roots: string[];
  wasm: WasmEntry[];
  metadata?: Record<string, unknown>;
}

/** A bundle read and checked, not yet instantiated. */
export interface Bundle {
  /** Display name: the file name without .tar.gz, or the directory name. */
  name: string;
  /** Where it came from (a path or URL), for status and audit. */
  source: string;
  manifest: Manifest;
  /** The merged data document of every data.json / data.yaml in the bundle. */
  data: Record<string, unknown>;
  /** All files of the bundle, by bundle path ("/policy.wasm"). */
  files: Map<string, Buffer>;
}

function parseManifest(raw: Buffer | undefined): Manifest {
  if (raw === undefined) {
    throw toolgateError(
      "manifest_invalid",
      "bundle has no /.manifest; toolgate needs one with wasm entrypoints",
    );
  }
  const m = parseJsonOr("manifest_invalid", "/.manifest is not JSON", raw);
  if (!isObject(m)) throw toolgateError("manifest_invalid", "/.manifest must be a JSON object");
  const hit = forbiddenKey(m);
  if (hit !== undefined)
    throw toolgateError("manifest_invalid", `/.manifest: ${describeForbiddenKey(hit)}`);
  const revision = m.revision ?? "";
  if (typeof revision !== "string")
    throw toolgateError("manifest_invalid", "/.manifest: revision must be a string");
  const roots = m.roots ?? [""];
  if (!Array.isArray(roots) || !roots.every((r) => typeof r === "string")) {
    throw toolgateError("manifest_invalid", "/.manifest: roots must be an array of strings");
  }
  const wasm = m.wasm ?? [];
  if (
    !Array.isArray(wasm) ||
    !wasm.every(
      (w) => isObject(w) && typeof w.entrypoint === "string" && typeof w.module === "string",
    )
  ) {
    throw toolgateError(
      "manifest_invalid",
      "/.manifest: wasm must be an array of {entrypoint, module}",
    );
  }
  const manifest: Manifest = {
    revision,
    roots: roots,
    wasm: (wasm as Array<{ entrypoint: string; module: string }>).map((w) => ({
      entrypoint: w.entrypoint,
      module: normalizeMemberPath(w.module),
    })),
  };
  if (isObject(m.metadata)) manifest.metadata = m.metadata;
  return manifest;
}

function rootCovers(root: string, path: string[]): boolean {
  if (root === "") return true;
  const r = root.split("/");
  return r.every((seg, i) => path[i] === seg) || path.every((seg, i) => r[i] === seg);
}

/**
 * Merges one data file's value into the data document at `path` (its
 * directory). The value has been checked for forbidden keys and `path` holds
 * none, so membership is own-property only (`hasOwn`, never `in`): nothing is
 * ever read from or written to a prototype.
 */
function mergeInto(
  target: Record<string, unknown>,
  path: string[],
  value: unknown,
  file: string,
): void {
  let node = target;
  for (const seg of path) {
    const next = hasOwn(node, seg) ? node[seg] : undefined;
    if (next === undefined) {
      const child: Record<string, unknown> = {};
      node[seg] = child;
      node = child;
    } else if (isObject(next)) {
      node = next;
    } else {
      throw toolgateError(
        "bundle_data_invalid",
        `${file}: conflicts with data at /${path.join("/")}`,
      );
    }
  }
  if (!isObject(value)) {
    if (path.length === 0)
      throw toolgateError("bundle_data_invalid", `${file}: root data must be an object`);
    throw toolgateError("bundle_data_invalid", `${file}: data files must hold an object`);
  }
  for (const [k, v] of Object.entries(value)) {
    if (hasOwn(node, k)) {
      if (isObject(node[k]) && isObject(v)) {
        mergeInto(node, [k], v, file);
        continue;
      }
      throw toolgateError(
        "bundle_data_invalid",
        `${file}: key /${[...path, k].join("/")} is defined twice`,
      );
    }
    node[k] = v;
  }
}

/** Checks a set of bundle files and assembles a Bundle (no wasm instantiated yet). */
export function parseBundle(files: Map<string, Buffer>, name: string, source: string): Bundle {
  const manifest = parseManifest(files.get("/.manifest"));
  const data: Record<string, unknown> = {};
  const dataFiles = [...files.keys()].filter((p) => /\/data\.(json|ya?ml)$/.test(p)).sort();
  for (const file of dataFiles) {
    const dir = file.split("/").slice(1, -1);
    const bad = dir.find((seg) => FORBIDDEN_KEYS.has(seg));
    if (bad !== undefined) {
      throw toolgateError(
        "bundle_data_invalid",
        `${file}: forbidden key ${JSON.stringify(bad)} in the data path /${dir.join("/")}`,
      );
    }
    if (!manifest.roots.some((r) => rootCovers(r, dir))) {
      throw toolgateError(
        "bundle_data_invalid",
        `${file}: outside the manifest roots ${JSON.stringify(manifest.roots)}`,
      );
    }
    const text = (files.get(file) as Buffer).toString("utf8");
    const value = rethrowAs("bundle_data_invalid", file, (): unknown =>
      file.endsWith(".json") ? JSON.parse(text) : parseYaml(text),
    );
    const hit = forbiddenKey(value);
    if (hit !== undefined)
      throw toolgateError("bundle_data_invalid", `${file}: ${describeForbiddenKey(hit)}`);
    mergeInto(data, dir, value, file);
  }
  for (const w of manifest.wasm) {
    if (!files.has(w.module)) {
      throw toolgateError(
        "manifest_invalid",
        `/.manifest names wasm module ${w.module}, which the bundle lacks`,
      );
    }
  }
  return { name, source, manifest, data, files };
}

function readDirectory(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile())
        files.set("/" + relative(dir, full).split(sep).join("/"), readFileSync(full));
    }
  };
  walk(dir);
  return files;
}

export function bundleNameOf(path: string): string {
  return basename(path).replace(/\.tar\.gz$|\.tgz$/, "");
}

/** Reads the files of a bundle (.tar.gz file or directory), by bundle path, unchecked. */
export async function readBundleFiles(
  path: string,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Promise<Map<string, Buffer>> {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw toolgateError("bundle_not_found", `bundle not found: ${path}`, { cause: e });
  }
  if (st.isDirectory()) return readDirectory(path);
  if (st.size > limits.maxBytes) {
    throw toolgateError(
      "bundle_too_large",
      `bundle ${path} is ${st.size} bytes; the limit is ${limits.maxBytes}`,
    );
  }
  return readTarGz(readFileSync(path), limits);
}

/** Reads a bundle from a .tar.gz file or a directory. */
export async function loadBundleFromPath(
  path: string,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Promise<Bundle> {
  return parseBundle(await readBundleFiles(path, limits), bundleNameOf(path), path);
}

/** Reads a bundle from the bytes of a .tar.gz archive. */
export async function loadBundleFromBytes(
  gz: Buffer,
  name: string,
  source: string,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Promise<Bundle> {
  return parseBundle(await readTarGz(gz, limits), name, source);
}
