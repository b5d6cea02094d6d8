/**
 * Certificates for TLS tests, made by the real openssl (EC P-256, valid one
 * day) in a fresh temporary directory: a self-signed server certificate, or a
 * CA that issues server certificates (subjectAltName IPs / DNS names) and
 * client certificates (for mTLS).
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./opa";

/** A key and its certificate, in PEM, as Buffers and as files. */
export interface Pem {
  key: Buffer;
  cert: Buffer;
  keyFile: string;
  certFile: string;
}

export interface LeafOptions {
  /** The subject's CN. */
  cn: string;
  /** subjectAltName IP addresses (a server certificate). */
  ips?: string[];
  /** subjectAltName DNS names (a server certificate). */
  dns?: string[];
  /** A client certificate (extendedKeyUsage clientAuth) instead of a server one. */
  client?: boolean;
}

export interface TestCa extends Pem {
  /** The CA's certificate file: what a client or server is told to trust. */
  caFile: string;
  /** A certificate this CA signs (a fresh key each call). */
  issue(opts: LeafOptions): Pem;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: "pipe" });
}

function pemFiles(keyFile: string, certFile: string): Pem {
  return { key: readFileSync(keyFile), cert: readFileSync(certFile), keyFile, certFile };
}

function subjectAltName(opts: { ips?: string[]; dns?: string[] }): string | undefined {
  const names = [
    ...(opts.ips ?? []).map((ip) => `IP:${ip}`),
    ...(opts.dns ?? []).map((d) => `DNS:${d}`),
  ];
  return names.length > 0 ? `subjectAltName=${names.join(",")}` : undefined;
}

/** A self-signed server certificate for `ip` (127.0.0.1); `caFile` is the certificate itself. */
export function selfSigned(ip = "127.0.0.1"): Pem & { caFile: string } {
  const dir = tempDir("toolgate-tls-");
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  openssl(
    ["req", "-x509", ...EC, "-days", "1", "-subj", `/CN=${ip}`]
      .concat(["-addext", subjectAltName({ ips: [ip] }) as string])
      .concat(["-keyout", keyFile, "-out", certFile]),
  );
  return { ...pemFiles(keyFile, certFile), caFile: certFile };
}

/** A CA (its own self-signed certificate, CA:TRUE) that issues leaf certificates. */
export function testCa(cn = "toolgate test CA"): TestCa {
  const dir = tempDir("toolgate-ca-");
  const keyFile = join(dir, "ca.key");
  const certFile = join(dir, "ca.pem");
  openssl(
    ["req", "-x509", ...EC, "-days", "1", "-subj", `/CN=${cn}`]
      .concat(["-addext", "basicConstraints=critical,CA:TRUE"])
      .concat(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
      .concat(["-keyout", keyFile, "-out", certFile]),
  );
  let n = 0;
  const issue = (opts: LeafOptions): Pem => {
    n++;
    const leafKey = join(dir, `leaf-${n}.key`);
    const csr = join(dir, `leaf-${n}.csr`);
    const leafCert = join(dir, `leaf-${n}.pem`);
    const ext = join(dir, `leaf-${n}.ext`);
    const san = subjectAltName(opts);
    writeFileSync(
      ext,
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        `extendedKeyUsage=${opts.client ? "clientAuth" : "serverAuth"}`,
        ...(san ? [san] : []),
      ].join("\n") + "\n",
    );
    openssl(["req", "-new", ...EC, "-subj", `/CN=${opts.cn}`, "-keyout", leafKey, "-out", csr]);
    openssl(
      ["x509", "-req", "-in", csr, "-CA", certFile, "-CAkey", keyFile]
        .concat(["-set_serial", String(1000 + n), "-days", "1", "-extfile", ext])
        .concat(["-out", leafCert]),
    );
    return pemFiles(leafKey, leafCert);
  };
  return { ...pemFiles(keyFile, certFile), caFile: certFile, issue };
}
