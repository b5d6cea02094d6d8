import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import type { PolicyConfig } from "./config";
import { normalizeError, toolgateError, rethrowAs } from "../errors";
import { bundleNameOf, readBundleFiles } from "../policy/bundle";
import { parseUntrustedJson } from "../shared/guards";
import { readTarGz } from "../shared/tar";
import { redactUrl } from "../shared/url";

/** What one poll of a source produced. */
export type Fetched =
  | {
      kind: "not_modified";
      /**
       * False when what the source still holds is not the active bundle (a
       * file that was refused, or is still being written): nothing new was
       * learned, so the last refusal stays visible. Default: true (http/oci
       * answer "not modified" only for the active bundle's ETag or digest).
       */
      current?: boolean;
    }
  | {
      kind: "bundle";
      files: Map<string, Buffer>;
      /** The .tar.gz bytes, when the source delivers an archive (kept as last-known-good). */
      bytes?: Buffer;
      /** ETag (http) or manifest digest (oci). */
      etag?: string;
      name: string;
    };

/** A bundle source: OPA's downloader, reduced to what toolgate needs. */
export interface BundleSource {
  readonly type: "file" | "http" | "oci";
  /** Where the bundle comes from, without credentials (status, logs, spans). */
  readonly location: string;
  /** Whether activated bundles are persisted as last-known-good. */
  readonly persist: boolean;
  fetch(signal: AbortSignal): Promise<Fetched>;
  /** Delay before the next poll (ms); `failures` counts consecutive failures. Null: no polling. */
  nextDelayMs(failures: number): number | null;
  /** Forget the validator (ETag, digest), so the next poll downloads again. */
  reset(): void;
}

export { redactUrl } from "../shared/url";

/** OPA-style exponential backoff with ±20 % jitter: 0.5 s · 2^(n-1), capped at `maxMs`. */
export function backoffMs(failures: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, 500 * 2 ** Math.max(0, Math.min(failures - 1, 30)));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** The polling, auth, TLS and limit settings of `policy.http` (shared by the HTTP and OCI sources). */
export type HttpOptions = Omit<PolicyConfig["http"], "url">;

interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One GET with a deadline for the whole exchange and a streamed size limit
 * (the body is aborted as soon as it passes `maxBytes`). TLS is verified,
 * against `ca` if given. Redirects are followed (at most 3).
 */
export async function httpGet(
  url: string,
  opts: {
    headers: Record<string, string>;
    maxBytes: number;
    timeoutMs: number;
    agent?: HttpsAgent | undefined;
    signal: AbortSignal;
    redirects?: number;
  },
): Promise<Response> {
  const u = new URL(url);
  const res = await new Promise<Response>((resolve, reject) => {
    const fail = (
      code: "bundle_download_failed" | "bundle_too_large",
      msg: string,
      cause?: Error,
    ): void => {
      reject(toolgateError(code, msg, cause === undefined ? undefined : { cause }));
      req.destroy();
    };
    const send = u.protocol === "https:" ? httpsRequest : httpRequest;
    const req = send(
      u,
      {
        method: "GET",
        headers: opts.headers,
        ...(u.protocol === "https:" && opts.agent ? { agent: opts.agent } : {}),
        signal: opts.signal,
      },
      (r) => {
        const len = Number(r.headers["content-length"] ?? "NaN");
        if (Number.isFinite(len) && len > opts.maxBytes) {
          fail(
            "bundle_too_large",
            `${redactUrl(url)}: response of ${len} bytes exceeds policy.http.max_bytes (${opts.maxBytes})`,
          );
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        r.on("data", (c: Buffer) => {
          size += c.length;
          if (size > opts.maxBytes) {
            fail(
              "bundle_too_large",
              `${redactUrl(url)}: response exceeds policy.http.max_bytes (${opts.maxBytes}); download aborted`,
            );
            return;
          }
          chunks.push(c);
        });
        r.on("end", () =>
          resolve({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks) }),
        );
        r.on("error", (e) => fail("bundle_download_failed", `${redactUrl(url)}: ${e.message}`, e));
      },
    );
    const timer = setTimeout(
      () => fail("bundle_download_failed", `${redactUrl(url)}: timed out after ${opts.timeoutMs} ms`),
      opts.timeoutMs,
    );
    req.on("close", () => clearTimeout(timer));
    req.on("error", (e) =>
      fail("bundle_download_failed", `${redactUrl(url)}: ${normalizeError(e).message}`, e),
    );
    req.end();
  });
  if ([301, 302, 303, 307, 308].includes(res.status) && typeof res.headers.location === "string") {
    const left = opts.redirects ?? 3;
    if (left <= 0) throw toolgateError("bundle_download_failed", `${redactUrl(url)}: too many redirects`);
    const next = redirectTarget(u, res.headers.location, opts.headers);
    return httpGet(next.url, { ...opts, headers: next.headers, redirects: left - 1 });
  }
  return res;
}

/** Headers that carry credentials: never sent to another origin. */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"]);

/**
 * Where a redirect from `from` to `location` goes, and with which headers (as
 * fetch does): an https URL is never followed to anything but https (a
 * downgrade would send the request, and take the bundle, in clear text), only
 * http(s) is followed at all, and credentials are dropped when the origin
 * (scheme, host, port) changes. The headers returned are carried on to any
 * further redirect, so a dropped token stays dropped.
 */
export function redirectTarget(
  from: URL,
  location: string,
  headers: Record<string, string>,
): { url: string; headers: Record<string, string> } {
  let to: URL;
  try {
    to = new URL(location, from);
  } catch (e) {
    throw toolgateError(
      "bundle_download_failed",
      `${redactUrl(from.href)}: redirect to an invalid URL`,
      { cause: e },
    );
  }
  if (to.protocol !== "https:" && to.protocol !== "http:") {
    throw toolgateError(
      "bundle_download_failed",
      `${redactUrl(from.href)}: redirect to ${to.protocol} refused (only http and https are followed)`,
    );
  }
  if (from.protocol === "https:" && to.protocol !== "https:") {
    throw toolgateError(
      "bundle_download_failed",
      `${redactUrl(from.href)}: redirect from https to ${redactUrl(to.href)} refused (a downgrade to plain http)`,
    );
  }
  if (to.origin === from.origin) return { url: to.href, headers };
  const kept: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!CREDENTIAL_HEADERS.has(k.toLowerCase())) kept[k] = v;
  }
  return { url: to.href, headers: kept };
}

abstract class RemoteSource {
  protected etag: string | undefined;
  protected readonly agent: HttpsAgent | undefined;

  constructor(protected readonly opts: HttpOptions) {
    if (opts.caFile !== null) {
      const file = opts.caFile;
      const ca = rethrowAs("config_invalid", `policy.http.ca_file: cannot read ${file}`, () =>
        readFileSync(file),
      );
      this.agent = new HttpsAgent({ ca, keepAlive: true });
    }
  }

  protected authHeaders(): Record<string, string> {
    const file = this.opts.bearerTokenFile;
    if (file === null) return {};
    const token = rethrowAs(
      "bundle_download_failed",
      `policy.http.bearer_token_file: cannot read ${file}`,
      () => readFileSync(file, "utf8").trim(),
    );
    return { authorization: `Bearer ${token}` };
  }

  nextDelayMs(failures: number): number {
    const max = this.opts.maxDelaySeconds * 1000;
    if (failures > 0) return backoffMs(failures, max);
    const min = this.opts.minDelaySeconds * 1000;
    return Math.round(min + Math.random() * (max - min));
  }

  reset(): void {
    this.etag = undefined;
  }
}

/** An HTTP(S) bundle server, polled with If-None-Match as OPA's downloader does. */
export class HttpSource extends RemoteSource implements BundleSource {
  readonly type = "http" as const;
  readonly persist = true;
  readonly location: string;

  constructor(
    private readonly url: string,
    opts: HttpOptions,
  ) {
    super(opts);
    this.location = redactUrl(url);
  }

  async fetch(signal: AbortSignal): Promise<Fetched> {
    const headers: Record<string, string> = {
      accept: "application/gzip, application/octet-stream, */*",
      ...this.authHeaders(),
    };
    if (this.etag !== undefined) headers["if-none-match"] = this.etag;
    const res = await httpGet(this.url, {
      headers,
      maxBytes: this.opts.maxBytes,
      timeoutMs: this.opts.timeoutMs,
      agent: this.agent,
      signal,
    });
    if (res.status === 304) return { kind: "not_modified" };
    if (res.status !== 200) {
      throw toolgateError(
        "bundle_download_failed",
        `${this.location}: server answered HTTP ${res.status}`,
      );
    }
    const files = await readTarGz(res.body, {
      maxBytes: this.opts.maxBytes * 8,
      maxFiles: 10_000,
    });
    const etag = typeof res.headers.etag === "string" ? res.headers.etag : undefined;
    const name = bundleNameOf(new URL(this.url).pathname.split("/").pop() || "bundle");
    return {
      kind: "bundle",
      files,
      bytes: res.body,
      name,
      ...(etag !== undefined ? { etag } : {}),
    };
  }

  /** Called once a download has been activated (or refused): remember its ETag. */
  commit(etag: string | undefined): void {
    this.etag = etag;
  }
}

const OCI_MANIFEST_TYPES = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];
const OCI_BUNDLE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";

/**
 * An OCI registry holding the bundle as a layer of an image manifest (as
 * OPA's OCI downloader reads it). A poll fetches the manifest; the layer is
 * downloaded only when the manifest digest changed, and checked against its
 * digest.
 */
export class OciSource extends RemoteSource implements BundleSource {
  readonly type = "oci" as const;
  readonly persist = true;
  readonly location: string;
  private readonly base: string;
  private readonly repo: string;
  private readonly ref: string;

  constructor(reference: string, plainHttp: boolean, opts: HttpOptions) {
    super(opts);
    const slash = reference.indexOf("/");
    const host = reference.slice(0, slash);
    const rest = reference.slice(slash + 1);
    const at = rest.indexOf("@");
    const colon = at === -1 ? rest.lastIndexOf(":") : at;
    this.repo = rest.slice(0, colon);
    this.ref = rest.slice(colon + 1);
    this.base = `${plainHttp ? "http" : "https"}://${host}`;
    this.location = `oci://${reference}`;
  }

  async fetch(signal: AbortSignal): Promise<Fetched> {
    const auth = this.authHeaders();
    const common = { maxBytes: this.opts.maxBytes, timeoutMs: this.opts.timeoutMs, agent: this.agent, signal };
    const m = await httpGet(`${this.base}/v2/${this.repo}/manifests/${this.ref}`, {
      ...common,
      maxBytes: Math.min(this.opts.maxBytes, 4 * 1024 * 1024),
      headers: { accept: OCI_MANIFEST_TYPES.join(", "), ...auth },
    });
    if (m.status !== 200) {
      throw toolgateError("bundle_download_failed", `${this.location}: manifest: registry answered HTTP ${m.status}`);
    }
    const digest = "sha256:" + createHash("sha256").update(m.body).digest("hex");
    if (this.etag === digest) return { kind: "not_modified" };
    const manifest = rethrowAs(
      "bundle_download_failed",
      `${this.location}: manifest is not usable JSON`,
      () =>
        parseUntrustedJson(m.body.toString("utf8")) as {
          layers?: Array<{ mediaType?: string; digest?: string; size?: number }>;
        },
    );
    const layer = (manifest.layers ?? []).find((l) => l.mediaType === OCI_BUNDLE_LAYER);
    if (layer === undefined || typeof layer.digest !== "string" || !/^sha256:[a-f0-9]{64}$/.test(layer.digest)) {
      throw toolgateError("bundle_download_failed", `${this.location}: manifest has no ${OCI_BUNDLE_LAYER} layer`);
    }
    if (typeof layer.size === "number" && layer.size > this.opts.maxBytes) {
      throw toolgateError("bundle_too_large", `${this.location}: layer of ${layer.size} bytes exceeds policy.http.max_bytes (${this.opts.maxBytes})`);
    }
    const b = await httpGet(`${this.base}/v2/${this.repo}/blobs/${layer.digest}`, { ...common, headers: auth });
    if (b.status !== 200) {
      throw toolgateError("bundle_download_failed", `${this.location}: layer: registry answered HTTP ${b.status}`);
    }
    const got = "sha256:" + createHash("sha256").update(b.body).digest("hex");
    if (got !== layer.digest) {
      throw toolgateError("bundle_download_failed", `${this.location}: layer digest ${got} differs from the manifest's ${layer.digest}`);
    }
    const files = await readTarGz(b.body, { maxBytes: this.opts.maxBytes * 8, maxFiles: 10_000 });
    const name = this.repo.split("/").pop() ?? "bundle";
    return { kind: "bundle", files, bytes: b.body, etag: digest, name };
  }

  commit(etag: string | undefined): void {
    this.etag = etag;
  }
}

/** A bundle file (.tar.gz) or directory, reloaded when it changes. */
export class FileSource implements BundleSource {
  readonly type = "file" as const;
  readonly persist = false;
  /** The stamp of the last read, and of the last read that was activated. */
  private seen: string | undefined;
  private active: string | undefined;

  constructor(
    readonly location: string,
    private readonly watchIntervalMs: number,
    private readonly debounceMs = 250,
  ) {}

  /** Size and mtime of the file, or of every file under the directory. */
  private stamp(): string {
    const parts: string[] = [];
    const visit = (p: string): void => {
      const st = statSync(p);
      if (st.isDirectory()) {
        for (const e of readdirSync(p).sort()) visit(join(p, e));
      } else parts.push(`${p}:${st.size}:${st.mtimeMs}:${st.ino}`);
    };
    try {
      visit(this.location);
    } catch {
      return "missing";
    }
    return parts.join("|");
  }

  async fetch(signal: AbortSignal): Promise<Fetched> {
    const before = this.stamp();
    if (this.seen !== undefined && before === this.seen)
      return { kind: "not_modified", current: before === this.active };
    if (this.seen !== undefined) {
      // debounce: a writer may still be at work; reload once the change holds still
      await new Promise((r) => setTimeout(r, this.debounceMs));
      if (signal.aborted || this.stamp() !== before)
        return { kind: "not_modified", current: false };
    }
    this.seen = before;
    const files = await readBundleFiles(this.location);
    return { kind: "bundle", files, name: bundleNameOf(this.location) };
  }

  nextDelayMs(): number | null {
    return this.watchIntervalMs > 0 ? this.watchIntervalMs : null;
  }

  /** Called once the last read has been activated. */
  commit(): void {
    this.active = this.seen;
  }

  reset(): void {
    this.seen = undefined;
    this.active = undefined;
  }
}
