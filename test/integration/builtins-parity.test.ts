import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ToolgateError } from "../../src/errors";
import { loadBundleFromPath } from "../../src/policy/bundle";
import { PolicyEngine } from "../../src/policy/engine";
import { buildWasmBundle, opaPath, tempDir } from "../helpers/opa";

// The calendar builtins toolgate provides to opa-wasm (src/policy/builtins.ts)
// against OPA itself: one policy, built to wasm with the pinned opa and run by
// toolgate's engine, and evaluated by `opa eval` (Go topdown) on the same input.

const POLICY = `package parity

import rego.v1

results[c.id] := r if {
	some c in input.cases
	r := run(c.fn, c.args)
}

ns(x) := {"ns": x, "sec": (x - (x % 1000000000)) / 1000000000, "rem": x % 1000000000}

run("clock", a) := v if {
	v := time.clock(a[0])
} else := "undefined"

run("date", a) := v if {
	v := time.date(a[0])
} else := "undefined"

run("weekday", a) := v if {
	v := time.weekday(a[0])
} else := "undefined"

run("add_date", a) := v if {
	v := ns(time.add_date(a[0], a[1], a[2], a[3]))
} else := "undefined"

run("parse_rfc3339_ns", a) := v if {
	v := ns(time.parse_rfc3339_ns(a[0]))
} else := "undefined"

run("parse_duration_ns", a) := v if {
	v := ns(time.parse_duration_ns(a[0]))
} else := "undefined"

# the reference library's helper (rego/toolgate/time.rego)
run("within_hours", a) := v if {
	v := data.toolgate.within_hours(a[0], a[1], a[2], a[3], a[4])
} else := "undefined"

# business hours, as a policy author writes them
run("business_hours", a) := v if {
	[h, _, _] := time.clock([a[0], a[1]])
	day := time.weekday([a[0], a[1]])
	v := {"open": day in {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}, "hour": h}
} else := "undefined"
`;

const TIME_REGO = readFileSync(
  join(__dirname, "..", "..", "rego", "toolgate", "time.rego"),
  "utf8",
);

type Case = { id: string; fn: string; args: unknown[] };

/** Seconds since the epoch of a UTC wall time, as exact nanoseconds. */
const utc = (iso: string, extraNs = 0n): bigint => BigInt(Date.parse(iso)) * 1_000_000n + extraNs;

// Zone data: Go reads the system zoneinfo (or its embedded copy), toolgate
// ICU's. Zones both define the same way agree; a legacy zone the two databases
// define differently (EST5EDT: a rule of its own in older zoneinfo, a link to
// America/New_York in ICU 2026c) disagrees before 1967, so it is not listed.
const ZONES = [
  "UTC",
  "",
  "Local",
  "America/New_York",
  "Europe/London",
  "Europe/Berlin",
  "Asia/Kolkata",
  "Asia/Kathmandu",
  "Australia/Lord_Howe",
  "Pacific/Chatham",
  "America/Sao_Paulo",
  "US/Eastern",
  "Etc/GMT+5",
  "Mars/Olympus",
  "america/new_york",
  "+05:00",
  "../etc/passwd",
];

const INSTANTS: Record<string, bigint> = {
  epoch: 0n,
  before_epoch: -1_000_000_000n,
  half_before_epoch: -500_000_000n,
  now_ish: utc("2026-12-01T19:30:00Z"),
  fraction: utc("2026-12-01T23:59:59.5Z"),
  leap_day: utc("2024-02-29T12:00:00Z"),
  y2000_leap: utc("2000-02-29T23:00:00Z"),
  y2100_not_leap: utc("2100-02-28T23:59:59Z"),
  ny_spring_before: utc("2026-03-08T06:59:59Z"),
  ny_spring_after: utc("2026-03-08T07:00:00Z"),
  ny_fall_before: utc("2026-11-01T05:59:59Z"),
  ny_fall_after: utc("2026-11-01T06:00:00Z"),
  eu_spring: utc("2026-03-29T01:00:00Z"),
  lord_howe_dst: utc("2026-10-04T02:00:00Z"),
  year_1800: utc("1800-06-01T12:00:00Z"),
  year_1900: utc("1900-01-01T00:00:00Z"),
  near_max: 9223372036000000000n,
  near_min: -9223372036000000000n,
};

function cases(): Case[] {
  const out: Case[] = [];
  for (const fn of ["clock", "date", "weekday"]) {
    for (const [name, ns] of Object.entries(INSTANTS)) {
      out.push({ id: `${fn}/${name}`, fn, args: [ns] });
      for (const tz of ZONES) out.push({ id: `${fn}/${name}@${tz}`, fn, args: [[ns, tz]] });
    }
    const odd: Record<string, unknown> = {
      empty_array: [],
      string: "1700000000000000000",
      fraction_ns: 1.5,
      null_ns: [null, "UTC"],
      number_tz: [0, 5],
      with_layout: [0, "UTC", "RFC3339"],
      bad_layout: [0, "UTC", 7],
      object: { ns: 0 },
      too_big: 1e19,
    };
    for (const [name, x] of Object.entries(odd)) out.push({ id: `${fn}/${name}`, fn, args: [x] });
  }

  const addDates: Record<string, unknown[]> = {
    jan31_plus_month: [utc("2026-01-31T10:00:00Z"), 0, 1, 0],
    jan31_plus_month_leap: [utc("2024-01-31T10:00:00Z"), 0, 1, 0],
    leap_day_plus_year: [utc("2024-02-29T00:00:00Z"), 1, 0, 0],
    leap_day_plus_4y: [utc("2024-02-29T00:00:00Z"), 4, 0, 0],
    mar31_minus_month: [utc("2026-03-31T00:00:00Z"), 0, -1, 0],
    minus_13_months: [utc("2026-01-15T00:00:00Z"), 0, -13, 0],
    plus_1200_months: [utc("2026-01-15T00:00:00Z"), 0, 1200, 0],
    plus_400_days: [utc("2026-01-15T00:00:00Z"), 0, 0, 400],
    minus_1_day_epoch: [0, 0, 0, -1],
    fraction_kept: [utc("2026-12-01T23:59:59.5Z"), 0, 0, 1],
    zero: [utc("2026-12-01T00:00:00Z"), 0, 0, 0],
    cancel_out: [utc("2026-12-01T00:00:00Z"), 1000, -12000, 0],
    out_of_range: [utc("2026-12-01T00:00:00Z"), 1000, 0, 0],
    below_range: [utc("2026-12-01T00:00:00Z"), -400, 0, 0],
    float_months: [0, 0, 1.5, 0],
    string_years: [0, "1", 0, 0],
    ny_into_gap: [[utc("2026-03-07T07:30:00Z"), "America/New_York"], 0, 0, 1],
    ny_into_overlap: [[utc("2026-10-31T05:30:00Z"), "America/New_York"], 0, 0, 1],
    ny_over_fall: [[utc("2026-10-31T16:00:00Z"), "America/New_York"], 0, 0, 1],
    ny_month_end: [[utc("2026-02-01T04:30:00Z"), "America/New_York"], 0, 1, 0],
    berlin_gap: [[utc("2026-03-28T01:30:00Z"), "Europe/Berlin"], 0, 0, 1],
    lord_howe_gap: [[utc("2026-10-03T15:45:00Z"), "Australia/Lord_Howe"], 0, 0, 1],
    kathmandu: [[utc("2026-12-31T20:00:00Z"), "Asia/Kathmandu"], 0, 0, 1],
    bad_zone: [[0, "Mars/Olympus"], 0, 0, 1],
    local: [[utc("2026-12-01T00:00:00Z"), "Local"], 0, 1, 0],
  };
  for (const [name, args] of Object.entries(addDates)) {
    out.push({ id: `add_date/${name}`, fn: "add_date", args });
  }

  const stamps = [
    "2026-12-01T10:00:00Z",
    "2026-12-01T10:00:00.123456789Z",
    "2026-12-01T10:00:00.1234567891234Z",
    "2026-12-01T10:00:00.5Z",
    "2026-12-01T10:00:00,5Z",
    "2026-12-01T10:00:00.Z",
    "2026-12-01T10:00:00+05:30",
    "2026-12-01T10:00:00-08:00",
    "2026-12-01T10:00:00-00:00",
    "2026-12-01T10:00:00+23:59",
    "2026-12-01T10:00:00+24:00",
    "2026-12-01T10:00:00+23:60",
    "2026-12-01T10:00:00+25:00",
    "2026-12-01T10:00:00+0530",
    "2026-12-01T10:00:00*05:30",
    "2026-12-01T1:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T10:60:00Z",
    "2026-12-01T10:00:60Z",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-00-01T00:00:00Z",
    "2026-12-01 10:00:00Z",
    "2026-12-01t10:00:00Z",
    "2026-12-01T10:00:00z",
    "2026-12-01T10:00:00",
    "2026-12-01",
    "",
    "1677-09-21T00:12:43.145224192Z",
    "1677-09-21T00:12:43.145224191Z",
    "2262-04-11T23:47:16.854775807Z",
    "2262-04-11T23:47:16.854775808Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59.999999999Z",
    "+2026-12-01T10:00:00Z",
    "２026-12-01T10:00:00Z",
  ];
  stamps.forEach((s, i) =>
    out.push({ id: `parse_rfc3339_ns/${i}:${s}`, fn: "parse_rfc3339_ns", args: [s] }),
  );
  out.push({ id: "parse_rfc3339_ns/number", fn: "parse_rfc3339_ns", args: [0] });

  const durations = [
    "1h30m",
    "1.5h",
    "-2us",
    "2µs",
    "2μs",
    "300ms",
    "1ns",
    "0",
    "-0",
    "+0",
    "",
    "1",
    "-",
    "1h 30m",
    "1H",
    "1x",
    ".5h",
    "5.h",
    ".h",
    "1e3s",
    "0.000000001s",
    "0.0000000001s",
    "1.0000000000000000001h",
    "1.00000000000000000000000000001h",
    "9223372036854775807ns",
    "9223372036854775808ns",
    "-9223372036854775808ns",
    "-9223372036854775809ns",
    "2562047h47m16.854775807s",
    "2562047h47m16.854775808s",
    "2562048h",
    "1d",
    "1.5d",
    "2w",
    "1y",
    "1d12h",
    "-1d",
    "+1w2d",
    "1dd",
    "1.2.3d",
    "d",
    "1d1.5μs",
    "1d1.5µs",
    "1d5ms",
    "0.00000001d",
    "106751d",
    "106752d",
    "300y",
    "1.5y",
    "1m1d",
    "3.d",
  ];
  durations.forEach((s, i) =>
    out.push({ id: `parse_duration_ns/${i}:${s}`, fn: "parse_duration_ns", args: [s] }),
  );
  out.push({ id: "parse_duration_ns/number", fn: "parse_duration_ns", args: [1] });

  const hours: Record<string, unknown[]> = {
    friday_evening_ny: [utc("2026-12-04T22:30:00Z"), "America/New_York"],
    saturday_utc_friday_ny: [utc("2026-12-05T03:00:00Z"), "America/New_York"],
    monday_morning_kolkata: [utc("2026-11-30T03:30:00Z"), "Asia/Kolkata"],
    sunday_tokyo: [utc("2026-12-05T15:00:00Z"), "Asia/Tokyo"],
  };
  for (const [name, args] of Object.entries(hours)) {
    out.push({ id: `business_hours/${name}`, fn: "business_hours", args });
  }
  const windows: Array<[string, string, string, unknown]> = [
    ["UTC", "09:00", "17:00", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]],
    [
      "America/New_York",
      "09:00",
      "17:30",
      ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
    ],
    ["Europe/Berlin", "22:00", "06:00", ["Friday", "Sunday"]],
    ["Asia/Kathmandu", "00:00", "24:00", ["Saturday"]],
    ["Mars/Olympus", "09:00", "17:00", ["Friday"]],
    ["UTC", "9:00", "17:00", ["Friday"]],
  ];
  for (const [name, ns] of Object.entries(INSTANTS)) {
    windows.forEach(([tz, from, to, days], i) =>
      out.push({
        id: `within_hours/${name}#${i}`,
        fn: "within_hours",
        args: [ns, tz, from, to, days],
      }),
    );
  }
  return out;
}

/** JSON with sorted keys (wasm and Go order object keys differently). */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

/** JSON with bigints written as exact JSON numbers. */
function exactJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    typeof v === "bigint" ? `__big__${v.toString()}__` : v,
  ).replace(/"__big__(-?\d+)__"/g, "$1");
}

describe("time builtins: toolgate's opa-wasm host functions match opa eval", () => {
  const table = cases();
  const input = exactJson({ cases: table });
  let viaWasm: Record<string, unknown>;
  let viaOpa: Record<string, unknown>;

  beforeAll(async () => {
    const bundle = buildWasmBundle(
      { "parity.rego": POLICY, "time.rego": TIME_REGO },
      { entrypoints: ["parity/results"] },
    );
    const engine = await PolicyEngine.create(await loadBundleFromPath(bundle), {
      entrypoint: "parity/results",
    });
    viaWasm = engine.evaluateJson(input) as Record<string, unknown>;

    const dir = tempDir("toolgate-parity-");
    writeFileSync(join(dir, "parity.rego"), POLICY);
    writeFileSync(join(dir, "time.rego"), TIME_REGO);
    writeFileSync(join(dir, "input.json"), input);
    const out = execFileSync(
      opaPath(),
      [
        "eval",
        "--format",
        "json",
        "-d",
        join(dir, "parity.rego"),
        "-d",
        join(dir, "time.rego"),
      ].concat(["-i", join(dir, "input.json"), "data.parity.results"]),
      { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, env: process.env },
    );
    const parsed = JSON.parse(out) as { result: Array<{ expressions: Array<{ value: unknown }> }> };
    viaOpa = parsed.result[0]?.expressions[0]?.value as Record<string, unknown>;
  });

  test("every case has an answer on both sides", () => {
    expect(Object.keys(viaWasm).sort()).toEqual(table.map((c) => c.id).sort());
    expect(Object.keys(viaOpa).sort()).toEqual(table.map((c) => c.id).sort());
  });

  test.each([
    "clock",
    "date",
    "weekday",
    "add_date",
    "parse_rfc3339_ns",
    "parse_duration_ns",
    "business_hours",
    "within_hours",
  ])("%s: same results as opa eval", (fn) => {
    const ids = table.filter((c) => c.fn === fn).map((c) => c.id);
    const mismatches = ids
      .filter((id) => canonical(viaWasm[id]) !== canonical(viaOpa[id]))
      .map((id) => ({ id, wasm: viaWasm[id], opa: viaOpa[id] }));
    expect(mismatches).toEqual([]);
  });

  test("the table exercises both defined and undefined results", () => {
    for (const fn of [
      "clock",
      "add_date",
      "parse_rfc3339_ns",
      "parse_duration_ns",
      "within_hours",
    ]) {
      const ids = table.filter((c) => c.fn === fn).map((c) => c.id);
      const undef = ids.filter((id) => viaOpa[id] === "undefined").length;
      expect(undef).toBeGreaterThan(0);
      expect(undef).toBeLessThan(ids.length);
    }
  });
});

describe("time builtins: errors in the engine", () => {
  const policy = `package errs

import rego.v1

hour := h if [h, _, _] := time.clock([input.ns, input.tz])
`;
  let bundlePath: string;
  beforeAll(() => {
    bundlePath = buildWasmBundle({ "errs.rego": policy }, { entrypoints: ["errs/hour"] });
  });

  test("by default a builtin error leaves the expression undefined, as in OPA", async () => {
    const engine = await PolicyEngine.create(await loadBundleFromPath(bundlePath), {
      entrypoint: "errs/hour",
    });
    expect(engine.evaluateJson(JSON.stringify({ ns: 0, tz: "Mars/Olympus" }))).toBeUndefined();
    expect(engine.evaluateJson(JSON.stringify({ ns: "x", tz: "UTC" }))).toBeUndefined();
    expect(engine.evaluateJson(JSON.stringify({ ns: 0, tz: "Asia/Tokyo" }))).toBe(9);
  });

  test("with strictBuiltinErrors the evaluation fails (the decision path denies) and the engine stays usable", async () => {
    const engine = await PolicyEngine.create(await loadBundleFromPath(bundlePath), {
      entrypoint: "errs/hour",
      strictBuiltinErrors: true,
    });
    let caught: unknown;
    try {
      engine.evaluateJson(JSON.stringify({ ns: 0, tz: "Mars/Olympus" }));
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(ToolgateError);
    expect((caught as ToolgateError).code).toBe("policy_evaluation_failed");
    expect((caught as ToolgateError).message).toContain(
      "time.clock: unknown time zone Mars/Olympus",
    );
    for (let i = 0; i < 50; i++) {
      expect(() => engine.evaluateJson(JSON.stringify({ ns: i, tz: "Nowhere/" + i }))).toThrow();
    }
    expect(engine.evaluateJson(JSON.stringify({ ns: 0, tz: "Asia/Tokyo" }))).toBe(9);
  });
});
