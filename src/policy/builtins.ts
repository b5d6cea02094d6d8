import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { join } from "node:path";

/**
 * OPA's calendar builtins for opa-wasm, implemented by the host.
 *
 * `opa build -t wasm` compiles none of these into the module: a policy that
 * calls them imports them, and opa-wasm looks host builtins up by name. Each
 * function here follows OPA's Go implementation (v1/topdown/time.go and Go's
 * time package): the same normalisation (AddDate), the same parser (RFC 3339
 * through time.Parse, durations through time.ParseDuration plus OPA's d/w/y
 * units), the same time zone names. test/integration/builtins-parity.test.ts
 * compares them with `opa eval` on a table of inputs.
 *
 * Errors: OPA makes a failing builtin's expression undefined unless
 * strict-builtin-errors is on. {@link hostBuiltins} does the same (returns
 * undefined, which the module treats as undefined); strict mode throws, so the
 * evaluation fails and the decision path denies (policy_evaluation_failed).
 *
 * Precision: opa-wasm hands arguments over as parsed JSON, so a nanosecond
 * timestamp arrives as an IEEE double (exact for whole seconds; within 128 ns
 * for instants up to 2262). Results are returned as exact JSON text.
 */

/** A builtin's operand or evaluation error (OPA: eval_type_error / eval_builtin_error). */
export class BuiltinError extends Error {
  override name = "BuiltinError";
}

const NS_PER_SEC = 1_000_000_000n;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/** The names this module implements (opa-wasm calls them by these names). */
export const TIME_BUILTINS = [
  "time.clock",
  "time.date",
  "time.weekday",
  "time.add_date",
  "time.parse_rfc3339_ns",
  "time.parse_duration_ns",
] as const;

// ---- integers -----------------------------------------------------------------

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

function mod(a: bigint, b: bigint): bigint {
  const r = a % b;
  return r < 0n ? r + b : r;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (month 1..12, day may overflow). */
function daysFromCivil(year: bigint, month: bigint, day: bigint): bigint {
  const y = month <= 2n ? year - 1n : year;
  const era = floorDiv(y, 400n);
  const yoe = y - era * 400n;
  const mp = mod(month + 9n, 12n);
  const doy = (153n * mp + 2n) / 5n + day - 1n;
  const doe = yoe * 365n + yoe / 4n - yoe / 100n + doy;
  return era * 146097n + doe - 719468n;
}

/** Wall-clock fields of a count of seconds since the epoch read as UTC. */
function civil(sec: bigint): {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  weekday: number;
} {
  const days = floorDiv(sec, 86400n);
  const rem = Number(sec - days * 86400n);
  const z = days + 719468n;
  const era = floorDiv(z, 146097n);
  const doe = z - era * 146097n;
  const yoe = (doe - doe / 1460n + doe / 36524n - doe / 146096n) / 365n;
  const doy = doe - (365n * yoe + yoe / 4n - yoe / 100n);
  const mp = (5n * doy + 2n) / 153n;
  const day = Number(doy - (153n * mp + 2n) / 5n + 1n);
  const month = Number(mp < 10n ? mp + 3n : mp - 9n);
  const year = Number(yoe + era * 400n + (month <= 2 ? 1n : 0n));
  return {
    year,
    month,
    day,
    hour: Math.floor(rem / 3600),
    minute: Math.floor((rem % 3600) / 60),
    second: rem % 60,
    weekday: Number(mod(days + 4n, 7n)), // 1970-01-01 was a Thursday
  };
}

function isLeap(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

function daysIn(month: number, year: number): number {
  if (month === 2) return isLeap(year) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** ns as a JSON text the wasm module parses exactly (a double would round it). */
function exactNumber(n: bigint): ArrayBuffer {
  const bytes = new TextEncoder().encode(n.toString());
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

// ---- time zones ---------------------------------------------------------------

/** Go's LoadLocation search path after $ZONEINFO (OPA also embeds time/tzdata). */
const ZONE_DIRS = [
  "/usr/share/zoneinfo/",
  "/usr/share/lib/zoneinfo/",
  "/usr/lib/locale/TZ/",
  "/etc/zoneinfo/",
];
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;
const MAX_CACHED_ZONES = 512;

const formatters = new Map<string, Intl.DateTimeFormat>();
const zoneValid = new Map<string, boolean>();

function isTzif(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    const magic = Buffer.alloc(4);
    return readSync(fd, magic, 0, 4, 0) === 4 && magic.toString("latin1") === "TZif";
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Whether Go's time.LoadLocation would load `name`: a TZif file under $ZONEINFO
 * or the system zoneinfo directories (case-sensitive, as on Linux). Without
 * any zoneinfo directory (e.g. a distroless image) Go falls back to its
 * embedded database; then ICU's acceptance decides.
 */
function zoneExists(name: string): boolean {
  const cached = zoneValid.get(name);
  if (cached !== undefined) return cached;
  let ok: boolean;
  if (name.length > 128 || !ZONE_NAME.test(name)) ok = false;
  else {
    const dirs = [process.env.ZONEINFO, ...ZONE_DIRS].filter(
      (d): d is string => typeof d === "string" && d !== "" && existsSync(d),
    );
    ok =
      dirs.length === 0 ? formatter(name) !== undefined : dirs.some((d) => isTzif(join(d, name)));
  }
  if (zoneValid.size >= MAX_CACHED_ZONES) zoneValid.clear();
  zoneValid.set(name, ok);
  return ok;
}

function formatter(zone: string): Intl.DateTimeFormat | undefined {
  let f = formatters.get(zone);
  if (f === undefined) {
    try {
      f = new Intl.DateTimeFormat("en-US", {
        timeZone: zone,
        calendar: "gregory",
        numberingSystem: "latn",
        hourCycle: "h23",
        era: "short",
        year: "numeric",
        month: "numeric",
        day: "numeric",
        hour: "numeric",
        minute: "numeric",
        second: "numeric",
      });
    } catch {
      return undefined;
    }
    if (formatters.size >= MAX_CACHED_ZONES) formatters.clear();
    formatters.set(zone, f);
  }
  return f;
}

/** A zone as the time functions use it: null is UTC. */
type Zone = string | null;

/** Go's time.Local: $TZ ("" = UTC, a leading ':' dropped, unknown = UTC), else the system zone. */
function localZone(): Zone {
  const tz = process.env.TZ;
  if (tz === undefined) {
    const name = new Intl.DateTimeFormat().resolvedOptions().timeZone;
    return name === "UTC" || name === "Etc/UTC" ? null : name;
  }
  const name = tz.startsWith(":") ? tz.slice(1) : tz;
  if (name === "" || name === "UTC" || !zoneExists(name)) return null;
  return name;
}

function resolveZone(name: string): Zone {
  switch (name) {
    case "":
    case "UTC":
      return null;
    case "Local":
      return localZone();
    default:
      if (!zoneExists(name) || formatter(name) === undefined) {
        throw new BuiltinError(`unknown time zone ${name}`);
      }
      return name;
  }
}

// ICU's Gregorian calendar switches to Julian before 1582; every zone is on
// its first (LMT) offset by 1601, as Go's lookup is before a zone's first
// transition. Past year 9999 ICU extends the last rule, as Go does.
const FIRST_SEC = -11644473600; // 1601-01-01T00:00:00Z
const LAST_SEC = 253402300799; // 9999-12-31T23:59:59Z

// The last lookup per zone: a rule reading time.clock and time.weekday of one
// instant (business hours) asks twice; ICU's formatToParts costs ~5 µs.
const lastOffset = new Map<string, { sec: number; offset: number }>();

/** The zone's UTC offset in seconds at an instant (seconds since the epoch). */
function offsetAt(zone: Zone, sec: bigint): number {
  if (zone === null) return 0;
  const s = Math.min(Math.max(Number(sec), FIRST_SEC), LAST_SEC);
  const last = lastOffset.get(zone);
  if (last !== undefined && last.sec === s) return last.offset;
  const f = formatter(zone);
  if (f === undefined) throw new BuiltinError(`unknown time zone ${zone}`);
  const parts: Record<string, string> = {};
  for (const p of f.formatToParts(new Date(s * 1000))) parts[p.type] = p.value;
  const wall =
    daysFromCivil(BigInt(parts.year ?? "0"), BigInt(parts.month ?? "0"), BigInt(parts.day ?? "0")) *
      86400n +
    BigInt(Number(parts.hour) * 3600 + Number(parts.minute) * 60 + Number(parts.second));
  const offset = Number(wall - BigInt(s));
  if (lastOffset.size >= MAX_CACHED_ZONES) lastOffset.clear();
  lastOffset.set(zone, { sec: s, offset });
  return offset;
}

// ---- operands -----------------------------------------------------------------

function typeName(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "array";
  return typeof x === "object" ? "object" : typeof x;
}

/** An integer nanosecond count in int64 range (Go: NumberToFloat(x).Int64() exactly). */
function nsOperand(x: unknown): bigint {
  if (typeof x !== "number") {
    throw new BuiltinError(`operand 1 must be number but got ${typeName(x)}`);
  }
  if (!Number.isInteger(x)) throw new BuiltinError("timestamp too big");
  const n = BigInt(x);
  if (n < INT64_MIN || n > INT64_MAX) throw new BuiltinError("timestamp too big");
  return n;
}

function intOperand(x: unknown, pos: number): bigint {
  if (typeof x !== "number") {
    throw new BuiltinError(`operand ${pos} must be number but got ${typeName(x)}`);
  }
  if (!Number.isInteger(x)) {
    throw new BuiltinError(`operand ${pos} must be integer number but got floating-point number`);
  }
  return BigInt(x);
}

function stringOperand(x: unknown, pos: number): string {
  if (typeof x !== "string") {
    throw new BuiltinError(`operand ${pos} must be string but got ${typeName(x)}`);
  }
  return x;
}

/** An instant with its zone: OPA's tzTime (a number, or [ns, tz?, layout?]). */
interface ZonedTime {
  sec: bigint;
  nsec: bigint;
  zone: Zone;
}

function zonedTime(x: unknown): ZonedTime {
  let nsValue: unknown = x;
  let zone: Zone = null;
  if (Array.isArray(x)) {
    if (x.length === 0) {
      throw new BuiltinError(
        "operand 1 must be one of {number (ns), [number (ns), string (tz)]} but got array",
      );
    }
    nsValue = x[0];
    if (typeof nsValue !== "number") {
      throw new BuiltinError(`operand 1 must be number but got ${typeName(nsValue)}`);
    }
    if (x.length > 1) zone = resolveZone(stringOperand(x[1], 1));
    if (x.length > 2) stringOperand(x[2], 1);
  } else if (typeof x !== "number") {
    throw new BuiltinError(
      `operand 1 must be one of {number (ns), [number (ns), string (tz)]} but got ${typeName(x)}`,
    );
  }
  const ns = nsOperand(nsValue);
  const sec = floorDiv(ns, NS_PER_SEC);
  return { sec, nsec: ns - sec * NS_PER_SEC, zone };
}

function wallClock(t: ZonedTime): ReturnType<typeof civil> {
  return civil(t.sec + BigInt(offsetAt(t.zone, t.sec)));
}

/** Go's toSafeUnixNano: an instant as int64 nanoseconds, or an error. */
function safeUnixNano(sec: bigint, nsec: bigint): bigint {
  const ns = sec * NS_PER_SEC + nsec;
  if (ns < INT64_MIN || ns > INT64_MAX) throw new BuiltinError("time outside of valid range");
  return ns;
}

/**
 * Go's time.Date for a wall clock in a zone: the offset is looked up at the
 * wall time read as UTC, then again at the instant that gives if that lies in
 * another zone period (gaps and overlaps resolve exactly as in Go).
 */
function fromWall(wall: bigint, zone: Zone): bigint {
  const first = offsetAt(zone, wall);
  if (first === 0) return wall;
  return wall - BigInt(offsetAt(zone, wall - BigInt(first)));
}

// ---- the builtins -------------------------------------------------------------

/** time.clock(x): [hour, minute, second] in x's zone (UTC by default). */
export function clock(x: unknown): [number, number, number] {
  const c = wallClock(zonedTime(x));
  return [c.hour, c.minute, c.second];
}

/** time.date(x): [year, month, day] in x's zone. */
export function date(x: unknown): [number, number, number] {
  const c = wallClock(zonedTime(x));
  return [c.year, c.month, c.day];
}

/** time.weekday(x): "Sunday" ... "Saturday" in x's zone. */
export function weekday(x: unknown): string {
  return WEEKDAYS[wallClock(zonedTime(x)).weekday] as string;
}

/** time.add_date(x, years, months, days): Go's Time.AddDate (Jan 31 + 1 month = Mar 3 or 2). */
export function addDate(x: unknown, years: unknown, months: unknown, days: unknown): bigint {
  const t = zonedTime(x);
  const dy = intOperand(years, 2);
  const dm = intOperand(months, 3);
  const dd = intOperand(days, 4);
  const c = wallClock(t);
  const m0 = BigInt(c.month - 1) + dm;
  const year = BigInt(c.year) + dy + floorDiv(m0, 12n);
  const month = mod(m0, 12n) + 1n;
  const dayCount = daysFromCivil(year, month, 1n) + BigInt(c.day - 1) + dd;
  const wall = dayCount * 86400n + BigInt(c.hour * 3600 + c.minute * 60 + c.second);
  return safeUnixNano(fromWall(wall, t.zone), t.nsec);
}

const RFC3339 =
  /^(\d{4})-(\d\d)-(\d\d)T(\d\d?):(\d\d):(\d\d)(?:[.,](\d+))?(?:(Z)|([^Z])(\d\d):(\d\d))$/;

/**
 * time.parse_rfc3339_ns(s): Go's time.Parse(time.RFC3339, s) — its strict fast
 * path and, where that fails, the layout parser it falls back to (one-digit
 * hours, a comma before the fraction, offsets up to 24:60 are accepted there).
 */
export function parseRfc3339Ns(value: unknown): bigint {
  const s = stringOperand(value, 1);
  const m = RFC3339.exec(s);
  const bad = (): BuiltinError =>
    new BuiltinError(`parsing time ${JSON.stringify(s)} as "2006-01-02T15:04:05Z07:00"`);
  if (m === null) throw bad();
  const [, ys, mos, ds, hs, mis, ss, frac, z, sign, ohs, oms] = m;
  const year = Number(ys);
  const month = Number(mos);
  const day = Number(ds);
  const hour = Number(hs);
  const minute = Number(mis);
  const second = Number(ss);
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) throw bad();
  if (day < 1 || day > daysIn(month, year)) throw bad();
  // Go keeps the first nine fraction digits and ignores the rest.
  const nsec = frac === undefined ? 0n : BigInt(frac.slice(0, 9).padEnd(9, "0"));
  let offset = 0;
  if (z === undefined) {
    if (sign !== "+" && sign !== "-") throw bad();
    const oh = Number(ohs);
    const om = Number(oms);
    if (oh > 24 || om > 60) throw bad();
    offset = (oh * 60 + om) * 60 * (sign === "-" ? -1 : 1);
  }
  const wall =
    daysFromCivil(BigInt(year), BigInt(month), BigInt(day)) * 86400n +
    BigInt(hour * 3600 + minute * 60 + second);
  return safeUnixNano(wall - BigInt(offset), nsec);
}

const UNITS: Record<string, bigint> = {
  ns: 1n,
  us: 1000n,
  "\u00b5s": 1000n, // micro sign
  "\u03bcs": 1000n, // Greek mu
  ms: 1_000_000n,
  s: NS_PER_SEC,
  m: 60n * NS_PER_SEC,
  h: 3600n * NS_PER_SEC,
};
const TWO63 = 2n ** 63n;

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "9";
}

/** Go's time.ParseDuration, to the nanosecond and with its overflow checks. */
function goParseDuration(orig: string): bigint {
  const bad = (): BuiltinError =>
    new BuiltinError(`time: invalid duration ${JSON.stringify(orig)}`);
  let s = orig;
  let neg = false;
  if (s !== "" && (s[0] === "-" || s[0] === "+")) {
    neg = s[0] === "-";
    s = s.slice(1);
  }
  if (s === "0") return 0n;
  if (s === "") throw bad();
  let d = 0n;
  while (s !== "") {
    if (!(s[0] === "." || isDigit(s[0]))) throw bad();
    // leading integer
    let i = 0;
    let v = 0n;
    for (; i < s.length && isDigit(s[i]); i++) {
      if (v > TWO63 / 10n) throw bad();
      v = v * 10n + BigInt(Number(s[i]));
      if (v > TWO63) throw bad();
    }
    const pre = i > 0;
    s = s.slice(i);
    // fraction
    let f = 0n;
    let scale = 1;
    let post = false;
    if (s !== "" && s[0] === ".") {
      s = s.slice(1);
      let j = 0;
      let overflow = false;
      for (; j < s.length && isDigit(s[j]); j++) {
        if (overflow) continue;
        if (f > (TWO63 - 1n) / 10n) {
          overflow = true;
          continue;
        }
        const y = f * 10n + BigInt(Number(s[j]));
        if (y > TWO63) {
          overflow = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      post = j > 0;
      s = s.slice(j);
    }
    if (!pre && !post) throw bad();
    // unit
    let k = 0;
    for (; k < s.length; k++) {
      if (s[k] === "." || isDigit(s[k])) break;
    }
    if (k === 0) throw new BuiltinError(`time: missing unit in duration ${JSON.stringify(orig)}`);
    const u = s.slice(0, k);
    s = s.slice(k);
    const unit = Object.hasOwn(UNITS, u) ? UNITS[u] : undefined;
    if (unit === undefined) {
      throw new BuiltinError(
        `time: unknown unit ${JSON.stringify(u)} in duration ${JSON.stringify(orig)}`,
      );
    }
    if (v > TWO63 / unit) throw bad();
    v *= unit;
    if (f > 0n) {
      // float64, as Go: nanosecond-accurate for fractions of hours
      v += BigInt(Math.trunc(Number(f) * (Number(unit) / scale)));
      if (v > TWO63) throw bad();
    }
    d += v;
    if (d > TWO63) throw bad();
  }
  if (neg) return -d;
  if (d > TWO63 - 1n) throw bad();
  return d;
}

/** Go's strconv.FormatFloat(x, 'f', -1, 64): shortest digits, never an exponent. */
function formatFloatF(x: number): string {
  const t = String(x);
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(t);
  if (m === null) return t;
  const [, sign, lead, rest = "", e] = m;
  const digits = `${lead}${rest}`;
  const exp = Number(e);
  if (exp >= 0) {
    const intLen = 1 + exp;
    return intLen >= digits.length
      ? `${sign}${digits.padEnd(intLen, "0")}`
      : `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
  }
  return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
}

const EXTENDED_HOURS: Record<string, number> = { d: 24, w: 7 * 24, y: 365 * 24 };
const DURATION_UNIT = /^(?:ms|us|\u00b5s|ns|[a-z])/;

/**
 * time.parse_duration_ns(s): Go's time.ParseDuration, plus OPA's d (24h),
 * w (7d) and y (365d) units: a string holding any of d, w, y is split into
 * segments (digits and dots, then a unit) and those units rewritten to hours.
 */
export function parseDurationNs(value: unknown): bigint {
  const s = stringOperand(value, 1);
  if (s === "") throw new BuiltinError(`time: invalid duration ""`);
  if (!/[dwy]/.test(s)) return goParseDuration(s);
  const bad = (): BuiltinError => new BuiltinError(`time: invalid duration ${JSON.stringify(s)}`);
  let rest = s;
  let out = "";
  if (rest[0] === "-" || rest[0] === "+") {
    out = rest[0];
    rest = rest.slice(1);
  }
  if (rest === "") throw bad();
  while (rest !== "") {
    const digits = /^[0-9.]+/.exec(rest)?.[0];
    if (digits === undefined) throw bad();
    rest = rest.slice(digits.length);
    const unit = DURATION_UNIT.exec(rest)?.[0];
    if (unit === undefined) throw bad();
    rest = rest.slice(unit.length);
    const coeff = EXTENDED_HOURS[unit];
    if (coeff === undefined) out += digits + unit;
    else {
      // strconv.ParseFloat: one optional point, at least one digit
      if (!/^(\d+\.?\d*|\.\d+)$/.test(digits)) throw bad();
      out += `${formatFloatF(Number(digits) * coeff)}h`;
    }
  }
  try {
    return goParseDuration(out);
  } catch {
    throw bad();
  }
}

// ---- host wiring ----------------------------------------------------------------

/** A builtin as opa-wasm calls it: JSON arguments in, a JSON value (or exact JSON text) out. */
export type HostBuiltin = (...args: unknown[]) => unknown;

const IMPLEMENTATIONS: Record<(typeof TIME_BUILTINS)[number], HostBuiltin> = {
  "time.clock": (x) => clock(x),
  "time.date": (x) => date(x),
  "time.weekday": (x) => weekday(x),
  "time.add_date": (x, y, m, d) => exactNumber(addDate(x, y, m, d)),
  "time.parse_rfc3339_ns": (s) => exactNumber(parseRfc3339Ns(s)),
  "time.parse_duration_ns": (s) => exactNumber(parseDurationNs(s)),
};

export interface HostBuiltinOptions {
  /**
   * OPA's strict-builtin-errors: a failing builtin fails the whole evaluation
   * (the decision path then denies) instead of leaving its expression undefined.
   */
  strict?: boolean;
  /** Called with each builtin error (e.g. to count them); must not throw. */
  onError?: (name: string, error: Error) => void;
}

/**
 * The calendar builtins keyed by name, for opa-wasm's loadPolicy. None of them
 * throws unless `strict` is set: an error leaves the expression undefined.
 */
export function hostBuiltins(opts: HostBuiltinOptions = {}): Record<string, HostBuiltin> {
  const out: Record<string, HostBuiltin> = {};
  for (const name of TIME_BUILTINS) {
    const impl = IMPLEMENTATIONS[name];
    out[name] = (...args: unknown[]) => {
      try {
        return impl(...args);
      } catch (e) {
        const err = e instanceof Error ? e : new BuiltinError(String(e));
        try {
          opts.onError?.(name, err);
        } catch {
          // a reporting hook cannot change the outcome
        }
        if (opts.strict === true) throw new BuiltinError(`${name}: ${err.message}`);
        return undefined;
      }
    };
  }
  return out;
}
