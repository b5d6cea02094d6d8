/**
 * The log line format, byte for byte: what src/shared/log.ts wrote while it
 * was built on winston (format.json: safe-stable-stringify, sorted keys,
 * "[Circular]", BigInt as a string), captured from that implementation and
 * kept as literals here, so the direct writer that replaced it is held to
 * the same bytes. Only `time`'s value varies; it is checked for shape and
 * range, then replaced by "T".
 */
import { createHash } from "node:crypto";
import { Writable } from "node:stream";
import { createLogger, type Logger, type LogLevel } from "../../src/shared/log";

const TIME = /"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"/g;

/** Runs `call` on a logger at `level` writing into memory; the lines with `time` normalised. */
async function run(level: LogLevel, call: (log: Logger) => void): Promise<string[]> {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString("utf8");
      cb();
    },
  });
  const log = createLogger(level, stream);
  const before = Date.now();
  call(log);
  await log.flush();
  await new Promise((r) => setImmediate(r));
  const after = Date.now();
  expect(text === "" || text.endsWith("\n")).toBe(true);
  return text
    .split("\n")
    .slice(0, -1)
    .map((line) => {
      const times = [...line.matchAll(TIME)];
      expect(times.length).toBeLessThanOrEqual(1); // none in line() and raw() text
      for (const m of times) {
        const t = Date.parse(m[1] ?? "");
        expect(t).toBeGreaterThanOrEqual(before);
        expect(t).toBeLessThanOrEqual(after);
      }
      return line.replace(TIME, '"time":"T"');
    });
}

function circular(): Record<string, unknown> {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  const arr: unknown[] = [1];
  arr.push(arr);
  const shared = { s: true };
  return { event: "c", o, arr, twice: [shared, shared], deep: { x: { back: o } } };
}

function selfFields(): Record<string, unknown> {
  const f: Record<string, unknown> = { a: 1, event: "self" };
  f.me = f;
  return f;
}

const CONTROL = "tab\there nl\nhere cr\r nul\u0000 esc\u001b del\u007f ls\u2028 ps\u2029";

/** The cases: [name, logger level, calls]. */
const CASES: Array<[string, LogLevel, (log: Logger) => void]> = [
  ["no fields", "info", (l) => l.info("started")],
  ["undefined fields", "info", (l) => l.warn("w", undefined)],
  ["empty fields", "info", (l) => l.error("e", {})],
  [
    "flat fields, every level at debug",
    "debug",
    (l) => {
      const f = { event: "x.y", port: 8080, ok: true, ratio: 0.25, none: null, neg: -3 };
      l.error("e1", f);
      l.warn("w1", f);
      l.info("i1", f);
      l.debug("d1", f);
    },
  ],
  [
    "filtered at info: debug dropped",
    "info",
    (l) => {
      l.debug("hidden", { event: "d" });
      l.info("shown", { event: "i" });
    },
  ],
  [
    "filtered at warn",
    "warn",
    (l) => {
      l.info("hidden");
      l.debug("hidden");
      l.warn("shown-w");
      l.error("shown-e");
    },
  ],
  [
    "filtered at error",
    "error",
    (l) => {
      l.warn("hidden");
      l.error("shown");
    },
  ],
  [
    "silent",
    "silent",
    (l) => {
      l.error("hidden", { event: "x" });
      l.line('{"event":"x"}', "error");
      l.raw('{"event":"x"}\n');
    },
  ],
  [
    "eight fields, insertion order is not key order",
    "info",
    (l) =>
      l.info("decision", {
        event: "decision.allowed",
        tool: "refund",
        decision_id: "d-123",
        agent: "support-bot",
        latency_ms: 1.75,
        allowed: true,
        reasons: ["budget_ok", "policy_ok"],
        Zeta: "upper sorts first",
      }),
  ],
  [
    "nested objects and arrays, sorted at every depth",
    "info",
    (l) =>
      l.info("nested", {
        event: "n",
        cfg: { b: 2, a: { d: [1, 2, { z: 1, y: [] }], c: null, e: {} } },
        list: [[], {}, [[1]], "s"],
      }),
  ],
  [
    "message equal to msg: dropped",
    "info",
    (l) => l.warn("same", { event: "sec", message: "same", decision_id: "d-1" }),
  ],
  [
    "message different: detail",
    "info",
    (l) => l.error("export failed", { event: "x", message: "connection refused" }),
  ],
  [
    "message different with a detail: message dropped",
    "info",
    (l) => l.error("m", { event: "x", message: "other", detail: "kept" }),
  ],
  ["message undefined: dropped", "info", (l) => l.info("m", { event: "x", message: undefined })],
  ["message empty: detail", "info", (l) => l.info("m", { event: "x", message: "" })],
  ["message a number: detail", "info", (l) => l.info("m", { message: 42 })],
  ["message an object: detail", "info", (l) => l.info("m", { message: { b: 1, a: 2 } })],
  [
    "detail undefined and a different message: detail is the message",
    "info",
    (l) => l.info("m", { message: "other", detail: undefined }),
  ],
  [
    "fields named level, time, msg: the line's own win",
    "info",
    (l) => l.warn("real", { level: "debug", time: "yesterday", msg: "fake", event: "x" }),
  ],
  [
    "Errors as values: own enumerable properties only",
    "info",
    (l) =>
      l.error("errs", {
        event: "e",
        error: new Error("boom"),
        coded: Object.assign(new Error("with code"), { code: "E_CODE" }),
        caused: new Error("outer", { cause: new Error("inner") }),
        type: new TypeError("t"),
      }),
  ],
  [
    "fields with a stack and a cause of their own",
    "info",
    (l) => l.error("sc", { event: "s", stack: "at x", cause: "because" }),
  ],
  ["circular values", "info", (l) => l.info("circ", circular())],
  ["fields that contain themselves", "info", (l) => l.info("self", selfFields())],
  [
    "undefined, functions, symbols, non-finite numbers",
    "info",
    (l) =>
      l.info("odd", {
        event: "o",
        u: undefined,
        f: () => 1,
        s: Symbol("s"),
        nan: NaN,
        inf: Infinity,
        ninf: -Infinity,
        negzero: -0,
        arr: [undefined, () => 1, Symbol("t"), NaN, null],
        nested: { u: undefined, keep: 1 },
        [Symbol("k")]: "symbol key",
      }),
  ],
  [
    "BigInt: a string",
    "info",
    (l) =>
      l.info("big", {
        event: "b",
        big: 12345678901234567890n,
        neg: -1n,
        nested: { n: 0n, arr: [1n] },
      }),
  ],
  [
    "toJSON: Date, Buffer, URL, custom; Map, Set, typed arrays",
    "info",
    (l) =>
      l.info("tojson", {
        event: "t",
        date: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)),
        bad_date: new Date(NaN),
        buf: Buffer.from("hi"),
        url: new URL("https://example.com/a?b=1"),
        custom: { toJSON: (k: string) => ({ key: k, z: 1, a: 2 }) },
        map: new Map([["a", 1]]),
        set: new Set([1]),
        u8: new Uint8Array([3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 10, 11]),
        empty_u8: new Uint8Array(0),
        f64: new Float64Array([1.5, -0]),
        boxed: Object("ab") as unknown,
        boxed_n: Object(5) as unknown,
      }),
  ],
  [
    "sparse arrays and odd keys",
    "info",
    (l) =>
      l.info("keys", {
        event: "k",
        // eslint-disable-next-line no-sparse-arrays
        sparse: [1, , 3],
        obj: {
          "10": "ten",
          "2": "two",
          "01": "zero-one",
          a: "a",
          B: "B",
          "": "empty",
          é: "e-acute",
        },
        'quo"te\\back\nline\u0001': "escaped key",
      }),
  ],
  [
    "null-prototype fields",
    "info",
    (l) =>
      l.info(
        "np",
        Object.assign(Object.create(null) as Record<string, unknown>, { event: "np", b: 1, a: 0 }),
      ),
  ],
  [
    "non-ASCII and control characters in msg, values, keys",
    "info",
    (l) =>
      l.info(`msg ${CONTROL} héllo ☃ 🎉`, {
        event: "u",
        text: `${CONTROL} ключ 日本語 🎉`,
        lone_high: "a\ud800b",
        lone_low: "\udc00",
        pair: "\ud83c\udf89",
        quotes: 'say "hi" \\ back',
        ключ: "non-ascii key",
      }),
  ],
  [
    "a quote alone, a backslash alone",
    "info",
    (l) =>
      l.info('say "x"', {
        event: "q",
        v: 'only "quotes" here',
        'k"ey': "back\\slash only",
        "bs\\key": 1,
      }),
  ],
  ["format tokens in msg without fields", "info", (l) => l.info("100% %s %d %j %%")],
  ["an empty msg", "info", (l) => l.info("", { event: "x" })],
  [
    "line and raw pass through",
    "debug",
    (l) => {
      l.line('{"event":"audit.decision","level":"info","msg":"audit.decision"}', "info");
      l.line('{"event":"filtered"}', "debug");
      l.raw('{"event":"raw1"}\n{"event":"raw2"}\n');
    },
  ],
  [
    "line filtered by level",
    "info",
    (l) => {
      l.line('{"event":"hidden"}', "debug");
      l.line('{"event":"shown"}', "warn");
    },
  ],
];

/** Cases run with Object.prototype.__proto__ deleted, as bin/toolgate.js and the audit worker do. */
const PROTO_CASES: Array<[string, LogLevel, (log: Logger) => void]> = [
  [
    "a __proto__ field",
    "info",
    (l) =>
      l.info(
        "p",
        JSON.parse('{"event":"p","__proto__":{"polluted":1},"a":1}') as Record<string, unknown>,
      ),
  ],
  [
    "a __proto__ field and a message",
    "info",
    (l) =>
      l.info(
        "p",
        JSON.parse('{"event":"p","message":"m","__proto__":{"polluted":1}}') as Record<
          string,
          unknown
        >,
      ),
  ],
  [
    "a nested __proto__ key",
    "info",
    (l) =>
      l.info("p", {
        event: "p",
        body: JSON.parse('{"b":1,"__proto__":{"polluted":1},"a":[{"__proto__":null}]}') as unknown,
      }),
  ],
];

const LONG = [
  ["a 4999-char string", "x".repeat(4999)],
  ["a 5000-char string", "x".repeat(5000)],
  ["a 100000-char string", "y".repeat(100_000)],
  ["a long string with escapes", `"\\\n\u0000é🎉`.repeat(20_000)],
] as const;

/** What the winston implementation wrote for each case (`time` normalised to "T"). */
const GOLDEN: Record<string, string[]> = {
  "no fields": ['{"level":"info","msg":"started","time":"T"}'],
  "undefined fields": ['{"level":"warn","msg":"w","time":"T"}'],
  "empty fields": ['{"level":"error","msg":"e","time":"T"}'],
  "flat fields, every level at debug": [
    '{"event":"x.y","level":"error","msg":"e1","neg":-3,"none":null,"ok":true,"port":8080,"ratio":0.25,"time":"T"}',
    '{"event":"x.y","level":"warn","msg":"w1","neg":-3,"none":null,"ok":true,"port":8080,"ratio":0.25,"time":"T"}',
    '{"event":"x.y","level":"info","msg":"i1","neg":-3,"none":null,"ok":true,"port":8080,"ratio":0.25,"time":"T"}',
    '{"event":"x.y","level":"debug","msg":"d1","neg":-3,"none":null,"ok":true,"port":8080,"ratio":0.25,"time":"T"}',
  ],
  "filtered at info: debug dropped": ['{"event":"i","level":"info","msg":"shown","time":"T"}'],
  "filtered at warn": [
    '{"level":"warn","msg":"shown-w","time":"T"}',
    '{"level":"error","msg":"shown-e","time":"T"}',
  ],
  "filtered at error": ['{"level":"error","msg":"shown","time":"T"}'],
  silent: [],
  "eight fields, insertion order is not key order": [
    '{"Zeta":"upper sorts first","agent":"support-bot","allowed":true,"decision_id":"d-123","event":"decision.allowed","latency_ms":1.75,"level":"info","msg":"decision","reasons":["budget_ok","policy_ok"],"time":"T","tool":"refund"}',
  ],
  "nested objects and arrays, sorted at every depth": [
    '{"cfg":{"a":{"c":null,"d":[1,2,{"y":[],"z":1}],"e":{}},"b":2},"event":"n","level":"info","list":[[],{},[[1]],"s"],"msg":"nested","time":"T"}',
  ],
  "message equal to msg: dropped": [
    '{"decision_id":"d-1","event":"sec","level":"warn","msg":"same","time":"T"}',
  ],
  "message different: detail": [
    '{"detail":"connection refused","event":"x","level":"error","msg":"export failed","time":"T"}',
  ],
  "message different with a detail: message dropped": [
    '{"detail":"kept","event":"x","level":"error","msg":"m","time":"T"}',
  ],
  "message undefined: dropped": ['{"event":"x","level":"info","msg":"m","time":"T"}'],
  "message empty: detail": ['{"detail":"","event":"x","level":"info","msg":"m","time":"T"}'],
  "message a number: detail": ['{"detail":42,"level":"info","msg":"m","time":"T"}'],
  "message an object: detail": ['{"detail":{"a":2,"b":1},"level":"info","msg":"m","time":"T"}'],
  "detail undefined and a different message: detail is the message": [
    '{"detail":"other","level":"info","msg":"m","time":"T"}',
  ],
  "fields named level, time, msg: the line's own win": [
    '{"event":"x","level":"warn","msg":"real","time":"T"}',
  ],
  "Errors as values: own enumerable properties only": [
    '{"caused":{},"coded":{"code":"E_CODE"},"error":{},"event":"e","level":"error","msg":"errs","time":"T","type":{}}',
  ],
  "fields with a stack and a cause of their own": [
    '{"cause":"because","event":"s","level":"error","msg":"sc","stack":"at x","time":"T"}',
  ],
  "circular values": [
    '{"arr":[1,"[Circular]"],"deep":{"x":{"back":{"a":1,"self":"[Circular]"}}},"event":"c","level":"info","msg":"circ","o":{"a":1,"self":"[Circular]"},"time":"T","twice":[{"s":true},{"s":true}]}',
  ],
  "fields that contain themselves": [
    '{"a":1,"event":"self","level":"info","me":{"a":1,"event":"self","me":"[Circular]"},"msg":"self","time":"T"}',
  ],
  "undefined, functions, symbols, non-finite numbers": [
    '{"arr":[null,null,null,null,null],"event":"o","inf":null,"level":"info","msg":"odd","nan":null,"negzero":0,"nested":{"keep":1},"ninf":null,"time":"T"}',
  ],
  "BigInt: a string": [
    '{"big":"12345678901234567890","event":"b","level":"info","msg":"big","neg":"-1","nested":{"arr":["1"],"n":"0"},"time":"T"}',
  ],
  "toJSON: Date, Buffer, URL, custom; Map, Set, typed arrays": [
    '{"bad_date":null,"boxed":{"0":"a","1":"b"},"boxed_n":{},"buf":{"data":[104,105],"type":"Buffer"},"custom":{"a":2,"key":"custom","z":1},"date":"2026-01-02T03:04:05.006Z","empty_u8":{},"event":"t","f64":{"0":1.5,"1":0},"level":"info","map":{},"msg":"tojson","set":{},"time":"T","u8":{"0":3,"1":2,"2":1,"3":0,"4":9,"5":8,"6":7,"7":6,"8":5,"9":4,"10":10,"11":11},"url":"https://example.com/a?b=1"}',
  ],
  "sparse arrays and odd keys": [
    '{"event":"k","level":"info","msg":"keys","obj":{"":"empty","01":"zero-one","10":"ten","2":"two","B":"B","a":"a","\u00e9":"e-acute"},"quo\\"te\\\\back\\nline\\u0001":"escaped key","sparse":[1,null,3],"time":"T"}',
  ],
  "null-prototype fields": ['{"a":0,"b":1,"event":"np","level":"info","msg":"np","time":"T"}'],
  "non-ASCII and control characters in msg, values, keys": [
    '{"event":"u","level":"info","lone_high":"a\\ud800b","lone_low":"\\udc00","msg":"msg tab\\there nl\\nhere cr\\r nul\\u0000 esc\\u001b del\u007f ls\u2028 ps\u2029 h\u00e9llo \u2603 \ud83c\udf89","pair":"\ud83c\udf89","quotes":"say \\"hi\\" \\\\ back","text":"tab\\there nl\\nhere cr\\r nul\\u0000 esc\\u001b del\u007f ls\u2028 ps\u2029 \u043a\u043b\u044e\u0447 \u65e5\u672c\u8a9e \ud83c\udf89","time":"T","\u043a\u043b\u044e\u0447":"non-ascii key"}',
  ],
  "a quote alone, a backslash alone": [
    '{"bs\\\\key":1,"event":"q","k\\"ey":"back\\\\slash only","level":"info","msg":"say \\"x\\"","time":"T","v":"only \\"quotes\\" here"}',
  ],
  "format tokens in msg without fields": ['{"level":"info","msg":"100% %s %d %j %%","time":"T"}'],
  "an empty msg": ['{"event":"x","level":"info","msg":"","time":"T"}'],
  "line and raw pass through": [
    '{"event":"audit.decision","level":"info","msg":"audit.decision"}',
    '{"event":"filtered"}',
    '{"event":"raw1"}',
    '{"event":"raw2"}',
  ],
  "line filtered by level": ['{"event":"shown"}'],
  "a __proto__ field": [
    '{"__proto__":{"polluted":1},"a":1,"event":"p","level":"info","msg":"p","time":"T"}',
  ],
  "a __proto__ field and a message": [
    '{"__proto__":{"polluted":1},"detail":"m","event":"p","level":"info","msg":"p","time":"T"}',
  ],
  "a nested __proto__ key": [
    '{"body":{"__proto__":{"polluted":1},"a":[{"__proto__":null}],"b":1},"event":"p","level":"info","msg":"p","time":"T"}',
  ],
};

/** The long cases: sha256 and UTF-8 length of the winston line. */
const GOLDEN_LONG: Record<string, [string, number]> = {
  "a 4999-char string": ["a25bf3c19939355c01d7c0974ba3ea75e1f18b1b12b90bafaaa528b7cb58dd9b", 10066],
  "a 5000-char string": ["d204259ab2feb82b611e208caf26fb9a64673172e5ac75f9eb003253e6e774bf", 10068],
  "a 100000-char string": [
    "13fd3e6f60a7c548d4cf5aa1b382f7f558af46c180dcdfe248f1cfa115ac4c85",
    106068,
  ],
  "a long string with escapes": [
    "f160369aff8a8473d45670e36683f7377945d0d7931d48c6595de85c5acdd46b",
    375496,
  ],
};

describe("log lines, byte for byte as winston wrote them", () => {
  test.each(CASES)("%s", async (name, level, call) => {
    expect(await run(level, call)).toEqual(GOLDEN[name]);
  });

  test.each(PROTO_CASES)(
    "%s (no __proto__ accessor, as in toolgate)",
    async (name, level, call) => {
      const desc = Object.getOwnPropertyDescriptor(Object.prototype, "__proto__");
      delete (Object.prototype as { __proto__?: unknown }).__proto__;
      let lines: string[];
      try {
        lines = await run(level, call);
      } finally {
        if (desc !== undefined) Object.defineProperty(Object.prototype, "__proto__", desc);
      }
      expect(lines).toEqual(GOLDEN[name]);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    },
  );

  test.each(LONG)("%s", async (name, value) => {
    const lines = await run("info", (l) =>
      l.info("long", { event: "l", value, [value.slice(0, 6000)]: 1 }),
    );
    expect(lines).toHaveLength(1);
    const line = lines[0] ?? "";
    const [hash, bytes] = GOLDEN_LONG[name] ?? ["", 0];
    expect(Buffer.byteLength(line)).toBe(bytes);
    expect(createHash("sha256").update(line).digest("hex")).toBe(hash);
  });
});
