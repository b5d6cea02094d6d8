/**
 * The component runner (src/shared/lifecycle.ts): start in order, stop in
 * reverse, a failed start stops what had started, stop waits for work in
 * flight, and the status aggregation readiness is made of. The components
 * here are the runner's collaborators, recording what is done to them.
 */
import {
  Lifecycle,
  stateValue,
  type Component,
  type ComponentStatus,
} from "../../src/shared/lifecycle";

interface Probe extends Component {
  state: ComponentStatus;
}

function component(
  name: string,
  log: string[],
  opts: {
    failStart?: boolean;
    failStop?: boolean;
    stopWork?: () => Promise<void>;
    advisory?: boolean;
  } = {},
): Probe {
  const c: Probe = {
    name,
    state: { state: "NOT_READY" },
    ...(opts.advisory ? { advisory: true } : {}),
    async start() {
      await Promise.resolve();
      log.push(`start ${name}`);
      if (opts.failStart) throw new Error(`${name} cannot start`);
      c.state = { state: "OK" };
    },
    async stop() {
      log.push(`stop ${name}`);
      await opts.stopWork?.();
      if (opts.failStop) throw new Error(`${name} cannot stop`);
      log.push(`stopped ${name}`);
      c.state = { state: "NOT_READY" };
    },
    status: () => c.state,
  };
  return c;
}

test("starts in order and stops in reverse, each stop awaited before the next", async () => {
  const log: string[] = [];
  const lc = new Lifecycle(["a", "b", "c"].map((n) => component(n, log)));
  await lc.start();
  expect(log).toEqual(["start a", "start b", "start c"]);
  log.length = 0;
  await lc.stop();
  expect(log).toEqual(["stop c", "stopped c", "stop b", "stopped b", "stop a", "stopped a"]);
});

test("a failed start stops those already started, in reverse, and rethrows", async () => {
  const log: string[] = [];
  const lc = new Lifecycle([
    component("a", log),
    component("b", log),
    component("c", log, { failStart: true }),
    component("d", log),
  ]);
  await expect(lc.start()).rejects.toThrow("c cannot start");
  expect(log).toEqual([
    "start a",
    "start b",
    "start c",
    "stop b",
    "stopped b",
    "stop a",
    "stopped a",
  ]);
  // stop() then releases what was built but never started (c failed, d never came), once each
  log.length = 0;
  await lc.stop();
  expect(log).toEqual(["stop d", "stopped d", "stop c", "stopped c"]);
  log.length = 0;
  await lc.stop();
  expect(log).toEqual([]);
});

test("stop waits for work in flight", async () => {
  const log: string[] = [];
  let finish: () => void = () => undefined;
  const inFlight = new Promise<void>((resolve) => (finish = resolve));
  const lc = new Lifecycle([
    component("store", log),
    component("poller", log, { stopWork: () => inFlight }),
  ]);
  await lc.start();
  let stopped = false;
  const stopping = lc.stop().then(() => (stopped = true));
  await new Promise((r) => setTimeout(r, 50));
  // the poller's download is still running: the store is not stopped under it, stop has not resolved
  expect(stopped).toBe(false);
  expect(log).toEqual(["start store", "start poller", "stop poller"]);
  finish();
  await stopping;
  expect(log.slice(3)).toEqual(["stopped poller", "stop store", "stopped store"]);
});

test("a failed stop does not keep the others running; the first error is rethrown, each reported", async () => {
  const log: string[] = [];
  const reported: string[] = [];
  const lc = new Lifecycle(
    [
      component("a", log),
      component("b", log, { failStop: true }),
      component("c", log, { failStop: true }),
    ],
    (name, e) => reported.push(`${name}: ${(e as Error).message}`),
  );
  await lc.start();
  await expect(lc.stop()).rejects.toThrow("c cannot stop");
  expect(log.filter((l) => l.startsWith("stop "))).toEqual(["stop c", "stop b", "stop a"]);
  expect(reported).toEqual(["c: c cannot stop", "b: b cannot stop"]);
});

test("status: every component by name in start order; ready only while all are OK", async () => {
  const log: string[] = [];
  const a = component("a", log);
  const b = component("b", log);
  const lc = new Lifecycle([a, b]);
  expect(lc.status()).toEqual({
    ready: false,
    components: { a: { state: "NOT_READY" }, b: { state: "NOT_READY" } },
  });
  await lc.start();
  expect(lc.status()).toEqual({
    ready: true,
    components: { a: { state: "OK" }, b: { state: "OK" } },
  });
  expect(Object.keys(lc.status().components)).toEqual(["a", "b"]);
  b.state = { state: "ERROR", detail: "its store cannot be read" };
  expect(lc.status()).toEqual({
    ready: false,
    components: { a: { state: "OK" }, b: { state: "ERROR", detail: "its store cannot be read" } },
  });
  b.status = () => {
    throw new Error("status exploded");
  };
  expect(lc.status().components.b).toEqual({ state: "ERROR", detail: "status exploded" });
});

test("an advisory component is reported but does not decide readiness", async () => {
  const log: string[] = [];
  const candidate = component("candidate", log, { advisory: true });
  const lc = new Lifecycle([component("a", log), candidate]);
  await lc.start();
  candidate.state = { state: "ERROR", detail: "not loaded" };
  expect(lc.status()).toEqual({
    ready: true,
    components: {
      a: { state: "OK" },
      candidate: { state: "ERROR", detail: "not loaded", advisory: true },
    },
  });
});

test("names are unique; the gauge encoding", () => {
  expect(() => new Lifecycle([component("a", []), component("a", [])])).toThrow(/two components/);
  expect([stateValue("OK"), stateValue("NOT_READY"), stateValue("ERROR")]).toEqual([1, 0, -1]);
});
