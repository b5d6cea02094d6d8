import { createHmac } from "node:crypto";
import type { Logger } from "../shared/log";

/**
 * Notifies a configured URL of each new pending approval: a JSON POST signed
 * with `X-Toolgate-Signature: sha256=<hex HMAC-SHA256 of the body>`, retried
 * with exponential backoff (1 s, 2 s, 4 s, 8 s) on network errors and 5xx.
 * Fire and forget: never on the decision path.
 */
export function webhookNotifier(
  cfg: { url: string; secret: string },
  log: Logger,
  opts: { attempts?: number; baseDelayMs?: number; timeoutMs?: number } = {},
): (view: Record<string, unknown>) => void {
  const attempts = opts.attempts ?? 5;
  const base = opts.baseDelayMs ?? 1000;
  return (view) => {
    const body = JSON.stringify({
      event: "approval.pending",
      approval: view,
      sent_at: new Date().toISOString(),
    });
    const signature = `sha256=${createHmac("sha256", cfg.secret).update(body).digest("hex")}`;
    const send = async (attempt: number): Promise<void> => {
      let outcome: string;
      try {
        const res = await fetch(cfg.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-toolgate-signature": signature,
            "x-toolgate-event": "approval.pending",
          },
          body,
          signal: AbortSignal.timeout(opts.timeoutMs ?? 5000),
        });
        if (res.ok) return;
        outcome = `HTTP ${res.status}`;
        if (res.status < 500 && res.status !== 429) {
          log.warn("approval webhook refused", {
            event: "approvals.webhook_failed",
            status: res.status,
            attempt,
          });
          return;
        }
      } catch (e) {
        outcome = (e as Error).message;
      }
      if (attempt >= attempts) {
        log.error("approval webhook gave up", {
          event: "approvals.webhook_failed",
          error: outcome,
          attempts,
        });
        return;
      }
      const delay = base * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4);
      await new Promise((r) => setTimeout(r, delay).unref());
      await send(attempt + 1);
    };
    void send(1);
  };
}
