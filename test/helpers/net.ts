import type { IncomingMessage } from "node:http";
import { createServer, type AddressInfo } from "node:net";

/** A loopback port that was free a moment ago (and is closed now). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

/** Reads a whole response; `json` is the parsed body, or undefined when it is empty or not JSON. */
export function collect(
  res: IncomingMessage,
  resolve: (r: HttpResult) => void,
  reject: (e: Error) => void,
): void {
  const chunks: Buffer[] = [];
  res.on("data", (c: Buffer) => chunks.push(c));
  res.on("end", () => {
    const text = Buffer.concat(chunks).toString("utf8");
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
  });
  res.on("error", reject);
}
