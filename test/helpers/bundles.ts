import { execFileSync } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { readTarGz, writeTarGz } from "../../src/shared/tar";
import { buildWasmBundle, opaPath, tempDir } from "./opa";

/** A fixture policy that meets the decision contract, with a data document. */
export function fixturePolicy(outcome: "allow" | "deny" = "allow"): Record<string, string> {
  return {
    "p.rego": `package toolgate
import rego.v1
decision := {"outcome": "${outcome}", "reasons": [{"code": "fixture", "message": data.fixture.note}], "obligations": []}
`,
    "data.json": JSON.stringify({ fixture: { note: "fixture data", n: 1.5 } }),
  };
}

/** A fresh RSA (or EC) key pair as PEM files; returns their paths. */
export function keyPair(kind: "rsa" | "ec" = "rsa"): { priv: string; pub: string } {
  const dir = tempDir("toolgate-keys-");
  const kp =
    kind === "rsa"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: "P-256" });
  const priv = join(dir, "key.pem");
  const pub = join(dir, "pub.pem");
  writeFileSync(priv, kp.privateKey.export({ type: "pkcs8", format: "pem" }));
  writeFileSync(pub, kp.publicKey.export({ type: "spki", format: "pem" }));
  return { priv, pub };
}

/**
 * Signs a built bundle with the real `opa sign` and puts the
 * .signatures.json it wrote into the archive (the signature is OPA's).
 */
export async function opaSign(
  bundle: string,
  opts: { key: string; alg?: string; claims?: Record<string, unknown> },
): Promise<string> {
  const dir = tempDir("toolgate-sign-");
  const args = ["sign", "--bundle", bundle, "--signing-key", opts.key, "-o", dir];
  if (opts.alg) args.push("--signing-alg", opts.alg);
  if (opts.claims) {
    writeFileSync(join(dir, "claims.json"), JSON.stringify(opts.claims));
    args.push("--claims-file", join(dir, "claims.json"));
  }
  execFileSync(opaPath(), args, { stdio: "pipe" });
  const files = await readTarGz(readFileSync(bundle));
  files.set("/.signatures.json", readFileSync(join(dir, ".signatures.json")));
  const out = join(dir, "signed.tar.gz");
  writeFileSync(out, await writeTarGz(files));
  return out;
}

/** Rewrites an archive's files (to tamper with a signed bundle). */
export async function rewriteBundle(
  bundle: string,
  edit: (files: Map<string, Buffer>) => void,
): Promise<string> {
  const files = await readTarGz(readFileSync(bundle));
  edit(files);
  const out = join(tempDir("toolgate-tamper-"), "tampered.tar.gz");
  writeFileSync(out, await writeTarGz(files));
  return out;
}

/** Builds a fixture bundle with the given revision (cached per revision and outcome). */
const built = new Map<string, string>();
export function fixtureBundle(revision: string, outcome: "allow" | "deny" = "allow"): string {
  const k = `${revision}/${outcome}`;
  let p = built.get(k);
  if (p === undefined) {
    p = buildWasmBundle(fixturePolicy(outcome), { revision });
    built.set(k, p);
  }
  return p;
}

/** A real bundle server on loopback: ETags, 304s, failure modes, counters. */
export class BundleServer {
  requests = 0;
  served = 0;
  notModified = 0;
  failed = 0;
  mode: "ok" | "error" | "hang" = "ok";
  /** Bearer token the server requires, if set. */
  token: string | undefined;
  private body: Buffer | undefined;
  private etag: string | undefined;
  private server: Server | undefined;
  url = "";

  publish(bytes: Buffer): void {
    this.body = bytes;
    this.etag = `"${createHash("sha256").update(bytes).digest("hex").slice(0, 20)}"`;
  }

  publishFile(path: string): void {
    this.publish(readFileSync(path));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests++;
    if (this.mode === "hang") return; // never answers; the client must time out
    if (this.mode === "error" || this.body === undefined) {
      this.failed++;
      res.writeHead(500).end("boom");
      return;
    }
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      this.failed++;
      res.writeHead(401).end();
      return;
    }
    if (req.headers["if-none-match"] === this.etag) {
      this.notModified++;
      res.writeHead(304, { etag: this.etag }).end();
      return;
    }
    this.served++;
    res
      .writeHead(200, { "content-type": "application/gzip", etag: this.etag as string })
      .end(this.body);
  }

  async start(port = 0): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => (this.server as Server).listen(port, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/bundles/fixture.tar.gz`;
    return this.url;
  }

  get port(): number {
    return Number(new URL(this.url).port);
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (s === undefined) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

/** Polls `cond` every 25 ms until it holds (jest's timeout bounds the wait). */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what = "condition",
): Promise<void> {
  for (;;) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
    void what;
  }
}
