import {
  addDate,
  BuiltinError,
  clock,
  date,
  hostBuiltins,
  parseDurationNs,
  parseRfc3339Ns,
  TIME_BUILTINS,
  weekday,
} from "../../src/policy/builtins";
import { supportedBuiltins, TOOLGATE_BUILTINS } from "../../src/policy/engine";

// Expected values come from `opa eval` (OPA v1.22.4); the integration test
// test/integration/builtins-parity.test.ts compares a larger table live.

const S = 1_000_000_000;
const at = (iso: string): number => Date.parse(iso) * 1_000_000;
const text = (v: unknown): string => new TextDecoder().decode(v as ArrayBuffer);

describe("time.clock / time.date / time.weekday", () => {
  test("UTC by default, [ns, tz] in a zone", () => {
    const t = at("2026-12-01T19:30:00Z");
    expect(clock(t)).toEqual([19, 30, 0]);
    expect(date(t)).toEqual([2026, 12, 1]);
    expect(weekday(t)).toBe("Tuesday");
    expect(clock([t, "America/New_York"])).toEqual([14, 30, 0]);
    expect(clock([t, "Asia/Kathmandu"])).toEqual([1, 15, 0]);
    expect(weekday([t, "Asia/Kathmandu"])).toBe("Wednesday");
    expect(date([t, "Asia/Kathmandu"])).toEqual([2026, 12, 2]);
    expect(clock([t, ""])).toEqual([19, 30, 0]);
    expect(clock([t, "UTC"])).toEqual([19, 30, 0]);
    expect(clock([t, "UTC", "RFC3339"])).toEqual([19, 30, 0]); // the layout is ignored here
  });

  test("before the epoch rounds down to the previous second", () => {
    expect(clock(-1)).toEqual([23, 59, 59]);
    expect(date(-1)).toEqual([1969, 12, 31]);
    expect(weekday(-1)).toBe("Wednesday");
    expect(clock(-S)).toEqual([23, 59, 59]);
  });

  test("DST: the offset changes at the transition instant", () => {
    expect(clock([at("2026-03-08T06:59:59Z"), "America/New_York"])).toEqual([1, 59, 59]);
    expect(clock([at("2026-03-08T07:00:00Z"), "America/New_York"])).toEqual([3, 0, 0]);
    expect(clock([at("2026-11-01T05:59:59Z"), "America/New_York"])).toEqual([1, 59, 59]);
    expect(clock([at("2026-11-01T06:00:00Z"), "America/New_York"])).toEqual([1, 0, 0]);
  });

  test("Local is the process zone ($TZ, as Go reads it)", () => {
    const saved = process.env.TZ;
    try {
      process.env.TZ = "Asia/Tokyo";
      expect(clock([0, "Local"])).toEqual([9, 0, 0]);
      process.env.TZ = ":Asia/Tokyo";
      expect(clock([0, "Local"])).toEqual([9, 0, 0]);
      process.env.TZ = "";
      expect(clock([0, "Local"])).toEqual([0, 0, 0]);
      process.env.TZ = "No/Such_Zone";
      expect(clock([0, "Local"])).toEqual([0, 0, 0]);
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });

  test("bad operands and unknown zones are errors", () => {
    for (const x of [
      [],
      "0",
      null,
      { ns: 0 },
      1.5,
      1e19,
      [null, "UTC"],
      [0, 5],
      [0, "UTC", 7],
      [0, "Mars/Olympus"],
      [0, "america/new_york"], // Go's zone names are case-sensitive
      [0, "+05:00"],
      [0, "../../etc/passwd"],
      [0, "/etc/localtime"],
      [0, "Local/../UTC"],
      [0, "x".repeat(200)],
    ]) {
      expect(() => clock(x)).toThrow(BuiltinError);
    }
  });
});

describe("time.add_date", () => {
  test("Go's AddDate normalisation: overflowing days roll into the next month", () => {
    expect(addDate(at("2026-01-31T10:00:00Z"), 0, 1, 0)).toBe(BigInt(at("2026-03-03T10:00:00Z")));
    expect(addDate(at("2024-01-31T10:00:00Z"), 0, 1, 0)).toBe(BigInt(at("2024-03-02T10:00:00Z")));
    expect(addDate(at("2024-02-29T00:00:00Z"), 1, 0, 0)).toBe(BigInt(at("2025-03-01T00:00:00Z")));
    expect(addDate(at("2026-03-31T00:00:00Z"), 0, -1, 0)).toBe(BigInt(at("2026-03-03T00:00:00Z")));
    expect(addDate(at("2026-01-15T00:00:00Z"), 0, -13, 0)).toBe(BigInt(at("2024-12-15T00:00:00Z")));
    expect(addDate(0, 0, 0, -1)).toBe(BigInt(-86400 * S));
    expect(addDate(at("2026-12-01T00:00:00Z"), 1000, -12000, 0)).toBe(
      BigInt(at("2026-12-01T00:00:00Z")),
    );
  });

  test("sub-second part is kept and the result is exact", () => {
    expect(addDate(at("2026-12-01T23:59:59.5Z"), 0, 0, 1)).toBe(
      BigInt(at("2026-12-02T23:59:59.5Z")),
    );
  });

  test("in a zone: wall-clock arithmetic, gaps and overlaps resolved as Go does", () => {
    // 2026-03-07 02:30 EST + 1 day = 2026-03-08 02:30, which does not exist: Go gives 01:30 EST
    expect(addDate([1772868600000000000, "America/New_York"], 0, 0, 1)).toBe(1772951400000000000n);
    // 2026-10-31 01:30 EDT + 1 day = 2026-11-01 01:30, twice: Go takes the first (EDT)
    expect(addDate([1793424600000000000, "America/New_York"], 0, 0, 1)).toBe(1793511000000000000n);
  });

  test("out of the int64 nanosecond range, or non-integer counts, is an error", () => {
    expect(() => addDate(at("2026-12-01T00:00:00Z"), 1000, 0, 0)).toThrow(
      "time outside of valid range",
    );
    expect(() => addDate(at("2026-12-01T00:00:00Z"), -400, 0, 0)).toThrow(BuiltinError);
    expect(() => addDate(0, 0, 1.5, 0)).toThrow("must be integer number");
    expect(() => addDate(0, "1", 0, 0)).toThrow(BuiltinError);
  });
});

describe("time.parse_rfc3339_ns", () => {
  test("Go's time.Parse(time.RFC3339, …): offsets, fractions to the nanosecond", () => {
    expect(parseRfc3339Ns("2026-12-01T10:00:00Z")).toBe(BigInt(at("2026-12-01T10:00:00Z")));
    expect(parseRfc3339Ns("2026-12-01T10:00:00.123456789+05:30")).toBe(1796099400123456789n);
    expect(parseRfc3339Ns("2026-12-01T10:00:00.1234567891234Z")).toBe(
      BigInt(at("2026-12-01T10:00:00Z")) + 123456789n,
    );
    expect(parseRfc3339Ns("2262-04-11T23:47:16.854775807Z")).toBe(2n ** 63n - 1n);
    expect(parseRfc3339Ns("1969-12-31T23:59:59.999999999Z")).toBe(-1n);
  });

  test("what Go's layout parser also accepts (one-digit hour, comma, offset 24:00)", () => {
    expect(parseRfc3339Ns("2026-12-01T1:00:00,5+24:00")).toBe(1796000400500000000n);
  });

  test("invalid strings and values out of range are errors", () => {
    for (const s of [
      "",
      "2026-12-01",
      "2026-12-01T10:00:00",
      "2026-12-01 10:00:00Z",
      "2026-12-01T10:00:00z",
      "2026-12-01T10:00:00+0530",
      "2026-12-01T10:00:00+25:00",
      "2026-12-01T24:00:00Z",
      "2026-12-01T10:00:60Z",
      "2023-02-29T00:00:00Z",
      "2026-04-31T00:00:00Z",
      "2026-13-01T00:00:00Z",
      "2026-12-01T10:00:00.Z",
      "２026-12-01T10:00:00Z",
      "2262-04-11T23:47:16.854775808Z",
      "1677-09-21T00:12:43.145224191Z",
    ]) {
      expect(() => parseRfc3339Ns(s)).toThrow(BuiltinError);
    }
    expect(() => parseRfc3339Ns(0)).toThrow("must be string");
  });
});

describe("time.parse_duration_ns", () => {
  test.each([
    ["1h30m", 5400n * 1_000_000_000n],
    ["1.5h", 5400n * 1_000_000_000n],
    ["-2us", -2000n],
    ["-2µs", -2000n],
    ["2μs", 2000n],
    ["300ms", 300_000_000n],
    ["0", 0n],
    ["-0", 0n],
    [".5h", 1800n * 1_000_000_000n],
    ["0.0000000001s", 0n],
    ["2562047h47m16.854775807s", 2n ** 63n - 1n],
    ["-9223372036854775808ns", -(2n ** 63n)],
    ["1d", 86400n * 1_000_000_000n],
    ["1.5d", 129600000000000n],
    ["2w", 14n * 86400n * 1_000_000_000n],
    ["1y", 365n * 86400n * 1_000_000_000n],
    ["-1d12h", -(36n * 3600n * 1_000_000_000n)],
    ["0.00000001d", 864000n],
  ])("%s", (s, ns) => {
    expect(parseDurationNs(s)).toBe(ns);
  });

  test.each([
    "",
    "1",
    "-",
    "1h 30m",
    "1H",
    "1x",
    ".h",
    "9223372036854775808ns",
    "2562048h",
    "1dd",
    "1.2.3d",
    "1d1.5μs",
    "106752d",
  ])("%j is an error", (s) => {
    expect(() => parseDurationNs(s)).toThrow(BuiltinError);
  });
});

describe("host wiring", () => {
  test("the engine knows every calendar builtin", () => {
    for (const name of TIME_BUILTINS) {
      expect(TOOLGATE_BUILTINS).toContain(name);
      expect(supportedBuiltins().has(name)).toBe(true);
    }
  });

  test("nanosecond results are handed to wasm as exact JSON text", () => {
    const b = hostBuiltins();
    expect(text(b["time.parse_rfc3339_ns"]?.("2262-04-11T23:47:16.854775807Z"))).toBe(
      "9223372036854775807",
    );
    expect(text(b["time.parse_duration_ns"]?.("-1.5h"))).toBe("-5400000000000");
    expect(text(b["time.add_date"]?.(0, 0, 0, 1))).toBe("86400000000000");
    expect(b["time.clock"]?.([0, "Asia/Tokyo"])).toEqual([9, 0, 0]);
  });

  test("errors give undefined (OPA's default), strict mode throws, onError sees them", () => {
    const seen: string[] = [];
    const lax = hostBuiltins({
      onError: (name, e) => {
        seen.push(`${name}: ${e.message}`);
        throw new Error("a failing hook changes nothing");
      },
    });
    expect(lax["time.clock"]?.([0, "Mars/Olympus"])).toBeUndefined();
    expect(lax["time.parse_duration_ns"]?.("soon")).toBeUndefined();
    expect(seen).toEqual([
      "time.clock: unknown time zone Mars/Olympus",
      'time.parse_duration_ns: time: invalid duration "soon"',
    ]);
    const strict = hostBuiltins({ strict: true });
    expect(() => strict["time.weekday"]?.("monday")).toThrow(
      "time.weekday: operand 1 must be one of",
    );
  });
});
