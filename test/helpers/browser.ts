/**
 * A real Chromium for the console's browser tests, driven by playwright-core.
 * Playwright's own browser download cannot be used here: the browser is
 * Debian's `chromium`, found (and installed when missing, as root) by
 * scripts/chromium.sh, and handed to Playwright as `executablePath`.
 *
 * Also: a fresh browser context per person (its own cookie jar), axe-core
 * injected into a page, a horizontal-scroll check, screenshots that are only
 * rewritten on request, and a local Slack incoming-webhook receiver.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

const root = join(__dirname, "..", "..");

/** The Chromium executable scripts/chromium.sh prints (it installs one first when it can). */
export function chromiumPath(): string {
  const out = execFileSync("bash", [join(root, "scripts", "chromium.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 15 * 60_000,
  });
  const path = out.trim().split("\n").pop() ?? "";
  if (path === "" || !existsSync(path))
    throw new Error(`scripts/chromium.sh printed no usable path: ${out}`);
  return path;
}

/**
 * Launches headless Chromium. Its sandbox cannot run as root (checked here:
 * with `chromiumSandbox: true` Chromium 156 exits with "Chromium sandboxing
 * failed!"), so as root the sandbox is off (`--no-sandbox`) — acceptable for a
 * test browser that only loads the test's own loopback pages. As another user
 * the sandbox stays on.
 */
export async function launchBrowser(): Promise<Browser> {
  const root = typeof process.getuid === "function" && process.getuid() === 0;
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    chromiumSandbox: !root,
    args: ["--disable-dev-shm-usage", "--disable-gpu", ...(root ? ["--no-sandbox"] : [])],
    timeout: 120_000,
  });
}

export interface Person {
  context: BrowserContext;
  page: Page;
}

export interface PersonOptions {
  viewport?: { width: number; height: number };
  /** Mobile emulation (touch, device scale) — for the phone check. */
  phone?: boolean;
  /** false: the page's scripts never run (progressive enhancement). Default true. */
  javaScript?: boolean;
}

/** A fresh browser context (own cookies, own storage) with one page; generous timeouts for slow machines. */
export async function newPerson(browser: Browser, opts: PersonOptions = {}): Promise<Person> {
  const context = await browser.newContext({
    viewport: opts.viewport ?? { width: 1280, height: 800 },
    ...(opts.phone ? { isMobile: true, hasTouch: true, deviceScaleFactor: 2 } : {}),
    javaScriptEnabled: opts.javaScript ?? true,
    locale: "en-US",
    timezoneId: "UTC",
  });
  context.setDefaultTimeout(30_000);
  context.setDefaultNavigationTimeout(60_000);
  const page = await context.newPage();
  return { context, page };
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: unknown; html: string; failureSummary?: string }>;
}

const axeSource = (): string => readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/**
 * Runs axe-core in the page (WCAG 2 A/AA rules and best practices) and returns
 * the violations. axe is added as a script tag; if the page's Content-Security-
 * Policy refuses inline scripts, it is evaluated through the DevTools protocol
 * instead (which CSP does not govern) — the page's own policy is left as is.
 */
export async function runAxe(page: Page): Promise<AxeViolation[]> {
  const source = axeSource();
  const loaded = async () =>
    page.evaluate(() => typeof (globalThis as { axe?: unknown }).axe === "object");
  if (!(await loaded())) {
    try {
      await page.addScriptTag({ content: source });
    } catch {
      // refused (CSP): fall through to evaluate
    }
    if (!(await loaded())) await page.evaluate(source);
  }
  return page.evaluate(async () => {
    const axe = (
      globalThis as unknown as {
        axe: {
          run: (
            ctx: unknown,
            opts: unknown,
          ) => Promise<{
            violations: Array<{
              id: string;
              impact: string | null;
              help: string;
              nodes: Array<{ target: unknown; html: string; failureSummary?: string }>;
            }>;
          }>;
        };
      }
    ).axe;
    const res = await axe.run((globalThis as unknown as { document: unknown }).document, {
      resultTypes: ["violations"],
      runOnly: {
        type: "tag",
        values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
      },
    });
    return res.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({
        target: n.target,
        html: n.html,
        ...(n.failureSummary !== undefined ? { failureSummary: n.failureSummary } : {}),
      })),
    }));
  });
}

/** The serious and critical ones, as readable lines (empty when there are none). */
export function seriousViolations(violations: AxeViolation[]): string[] {
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map(
      (v) =>
        `${v.impact}: ${v.id} — ${v.help}\n` +
        v.nodes
          .slice(0, 5)
          .map((n) => `    ${JSON.stringify(n.target)} ${n.html.slice(0, 200)}`)
          .join("\n"),
    );
}

/** Whether the page is wider than its viewport (a phone would have to scroll sideways). */
export async function scrollsSideways(
  page: Page,
): Promise<{ scrollWidth: number; clientWidth: number }> {
  return page.evaluate(() => {
    // (tsconfig has no DOM lib: the little of `document` used here, typed by hand)
    interface Box {
      scrollWidth: number;
      clientWidth: number;
    }
    const doc = (globalThis as unknown as { document: { documentElement: Box; body: Box } })
      .document;
    return {
      scrollWidth: Math.max(doc.documentElement.scrollWidth, doc.body.scrollWidth),
      clientWidth: doc.documentElement.clientWidth,
    };
  });
}

/**
 * A screenshot into docs/img, written only when UPDATE_SCREENSHOTS=1 or when
 * the file does not exist yet, so ordinary runs never rewrite committed files.
 * The viewport's width; the page's height up to `maxHeight` (default: the
 * viewport's). Returns whether it was written.
 */
export async function docScreenshot(
  page: Page,
  name: string,
  opts: { maxHeight?: number } = {},
): Promise<boolean> {
  const file = join(root, "docs", "img", name);
  if (process.env.UPDATE_SCREENSHOTS !== "1" && existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true });
  const viewport = page.viewportSize() ?? { width: 1280, height: 800 };
  const pageHeight = await page.evaluate(
    () =>
      (globalThis as unknown as { document: { documentElement: { scrollHeight: number } } })
        .document.documentElement.scrollHeight,
  );
  const height = Math.min(Math.max(viewport.height, pageHeight), opts.maxHeight ?? viewport.height);
  await page.screenshot({
    path: file,
    type: "png",
    fullPage: height > viewport.height,
    clip: { x: 0, y: 0, width: viewport.width, height },
    animations: "disabled",
  });
  return true;
}

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  text: string;
  json: unknown;
}

export interface Receiver {
  url: string;
  received: Received[];
  /** Resolves with the first message (already received or yet to come) the predicate accepts. */
  waitFor(pred: (m: Received) => boolean, timeoutMs?: number): Promise<Received>;
  close(): Promise<void>;
}

/** A real HTTP server on loopback that takes POSTs as a Slack incoming webhook does ("ok"). */
export async function startWebhookReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const waiters: Array<{ pred: (m: Received) => boolean; resolve: (m: Received) => void }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      const m: Received = { path: req.url ?? "", headers: req.headers, text, json };
      if (req.method === "POST") {
        received.push(m);
        for (const w of [...waiters]) {
          if (w.pred(m)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(m);
          }
        }
      }
      res.writeHead(req.method === "POST" ? 200 : 405, { "content-type": "text/plain" });
      res.end(req.method === "POST" ? "ok" : "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/services/T000/B000/test-hook`,
    received,
    waitFor(pred, timeoutMs = 30_000) {
      const seen = received.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = {
          pred,
          resolve: (m: Received) => {
            clearTimeout(timer);
            resolve(m);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(
            new Error(
              `no matching webhook message within ${timeoutMs} ms (${received.length} received)`,
            ),
          );
        }, timeoutMs);
        waiters.push(w);
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Every http(s) URL in a message (Slack mrkdwn `<url|text>`, buttons' `url`, anywhere in the JSON). */
export function linksIn(m: Received): string[] {
  return [...m.text.matchAll(/https?:\/\/[^\s"'<>|\\]+/g)].map((x) => x[0]);
}
