/**
 * The config schema builder. A spec is a tree laid out in the shape of the
 * compiled config: its leaves are fields (one config key each: the key in the
 * file, its environment variable, type, default and meaning), its inner nodes
 * plain groups (compiled as they are) or sections. A section is a group that
 * owns its cross-field checks and a compile step (derived values, one value
 * from several keys). The compiled type is
 * derived from the tree (`Infer<typeof SPEC>`), never written by hand.
 *
 * Leaf-level: the section specs beside the features import this file and
 * src/shared only, so src/config can assemble them without importing a
 * feature.
 */
import { nullProto } from "./guards";

export type FieldType =
  | { kind: "string"; pattern?: RegExp; patternHint?: string }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "int"; min: number; max: number }
  | { kind: "bool" }
  | { kind: "path" }
  | { kind: "host" }
  /** Structured value (YAML list/mapping; env: JSON text); its entries are read by the field's item reader. */
  | { kind: "list" | "map"; hint: string };

/** What a field documents: one row of docs/configuration.md. */
export interface FieldSpec {
  key: string;
  env: string;
  type: FieldType;
  default: string | number | boolean | null;
  doc: string;
  /** Never echoed in messages or logs. */
  secret?: boolean;
}

/** Where a section's checks (and a list's item reader) send problems; each names the key and the fix. */
export interface CheckContext {
  report: (problem: string) => void;
  /** A path from the config, resolved against the config file's directory (or the working directory). */
  resolve: (path: string) => string;
}

/** What a section's compile step may use besides its own values. */
export interface CompileContext {
  resolve: (path: string) => string;
  /** `state.dir`, resolved: where state paths default to. */
  stateDir: string;
  /** Where the config came from, for the start-up banner. */
  origin: { file: string | null; env: string[] };
}

declare const VALUE: unique symbol;
declare const LOOSE: unique symbol;

/**
 * One config key. `V` is its value once checked (a path resolved); `L` what a
 * section's checks see (the same, but a list or map before its entries are
 * read). Both exist only as types.
 */
export class Field<V, L = V> implements FieldSpec {
  declare readonly [VALUE]: V;
  declare readonly [LOOSE]: L;
  readonly key: string;
  readonly env: string;
  readonly type: FieldType;
  readonly default: string | number | boolean | null;
  readonly doc: string;
  readonly secret?: boolean;

  constructor(spec: FieldSpec) {
    this.key = spec.key;
    this.env = spec.env;
    this.type = spec.type;
    this.default = spec.default;
    this.doc = spec.doc;
    if (spec.secret === true) this.secret = true;
  }
}

/** Reads one entry of a list or map: reports its problems, returns what it compiles to (undefined: nothing). */
export type ItemReader<T> = (raw: unknown, where: string, ctx: CheckContext) => T | undefined;

/** A list field (`key[i]` in messages); its compiled value is the entries as the item reader returns them. */
export class ListField<T> extends Field<T[] | null, readonly unknown[] | null> {
  constructor(
    spec: FieldSpec,
    private readonly item: ItemReader<T>,
  ) {
    super(spec);
  }

  items(raw: readonly unknown[], ctx: CheckContext): T[] {
    return raw.flatMap((entry, i) => {
      const v = this.item(entry, `${this.key}[${i}]`, ctx);
      return v === undefined ? [] : [v];
    });
  }
}

/** A map field (`key["name"]` in messages), compiled to a record without a prototype (looked up by names from outside). */
export class MapField<T> extends Field<
  Record<string, T> | null,
  Readonly<Record<string, unknown>> | null
> {
  constructor(
    spec: FieldSpec,
    private readonly item: ItemReader<T>,
  ) {
    super(spec);
  }

  items(raw: Readonly<Record<string, unknown>>, ctx: CheckContext): Record<string, T> {
    const out = emptyRecord<T>();
    for (const [name, entry] of Object.entries(raw)) {
      const v = this.item(entry, `${this.key}[${JSON.stringify(name)}]`, ctx);
      if (v !== undefined) out[name] = v;
    }
    return out;
  }
}

/** How the engine reads a node: as the checks see it, or compiled. */
export interface Reader {
  loose<N extends Node>(node: N): Loose<N>;
  values<N extends Node>(node: N): Values<N>;
}

/** A group with its own cross-field checks and compile step; `O` is its compiled value. */
export class Section<F extends Group, O> {
  declare readonly [VALUE]: O;
  constructor(
    readonly fields: F,
    /** Run after every field is read, children's sections first; a value that failed its own check reads as undefined. */
    readonly check: (read: Reader, ctx: CheckContext) => void,
    /** Run once every check passed. */
    readonly compile: (read: Reader, ctx: CompileContext) => O,
  ) {}
}

export type Node = Field<unknown, unknown> | Section<Group, unknown> | Group;
export interface Group {
  readonly [name: string]: Node;
}

/** The compiled value of a node. */
export type Values<N> =
  N extends Field<infer V, unknown>
    ? V
    : N extends Section<Group, infer O>
      ? O
      : { -readonly [K in keyof N]: Values<N[K]> };

/** A node as its section's checks see it: fields that failed their own check are undefined. */
export type Loose<N> =
  N extends Field<unknown, infer L>
    ? L | undefined
    : N extends Section<infer F, unknown>
      ? Loose<F>
      : { -readonly [K in keyof N]: Loose<N[K]> };

/** The compiled type a spec describes. */
export type Infer<S extends Node> = Values<S>;

/**
 * A section: `fields` laid out as the config file nests them (names as the
 * compiled config has them), `check` its cross-field rules (each problem
 * reported naming the keys and the fix), `compile` its compiled value from its
 * fields' values (derived values, one value from several keys).
 */
export function section<F extends Group, O>(
  fields: F,
  hooks: {
    check?: (v: Loose<F>, ctx: CheckContext) => void;
    compile: (v: Values<F>, ctx: CompileContext) => O;
  },
): Section<F, O> {
  return new Section(
    fields,
    (read, ctx) => hooks.check?.(read.loose(fields), ctx),
    (read, ctx) => hooks.compile(read.values(fields), ctx),
  );
}

/** Every field under `node`, in spec order (the order of docs/configuration.md). */
export function fieldsOf(node: Node): Field<unknown, unknown>[] {
  if (node instanceof Field) return [node];
  if (node instanceof Section) return fieldsOf(node.fields);
  return Object.values(node).flatMap(fieldsOf);
}

// -- leaves -------------------------------------------------------------------

interface Meta<D> {
  key: string;
  env: string;
  default: D;
  doc: string;
  secret?: boolean;
}

function meta<D extends FieldSpec["default"]>(m: Meta<D>, type: FieldType): FieldSpec {
  return {
    key: m.key,
    env: m.env,
    type,
    default: m.default,
    doc: m.doc,
    ...(m.secret === true ? { secret: true } : {}),
  };
}

/** A string matching `pattern`; `hint` says what that is in messages. */
export function text<D extends string | null>(
  m: Meta<D> & { pattern: RegExp; hint: string },
): Field<string | D> {
  return new Field(meta(m, { kind: "string", pattern: m.pattern, patternHint: m.hint }));
}

export function int<D extends number | null>(
  m: Meta<D> & { min: number; max: number },
): Field<number | D> {
  return new Field(meta(m, { kind: "int", min: m.min, max: m.max }));
}

export function bool(m: Meta<boolean>): Field<boolean> {
  return new Field(meta(m, { kind: "bool" }));
}

export function oneOf<const V extends readonly string[]>(
  values: V,
  m: Meta<V[number]>,
): Field<V[number]> {
  return new Field(meta(m, { kind: "enum", values }));
}

/** A file or directory; compiled resolved against the config file's directory. */
export function path<D extends string | null>(m: Meta<D>): Field<string | D> {
  return new Field(meta(m, { kind: "path" }));
}

/** An IP address or host name. */
export function host(m: Meta<string>): Field<string> {
  return new Field(meta(m, { kind: "host" }));
}

/** A list whose entries `item` reads (called by the section's check, which reports its problems). */
export function list<T>(m: Meta<null> & { hint: string; item: ItemReader<T> }): ListField<T> {
  return new ListField(meta(m, { kind: "list", hint: m.hint }), m.item);
}

/** A mapping name → entry, each entry read by `item`. */
export function map<T>(m: Meta<null> & { hint: string; item: ItemReader<T> }): MapField<T> {
  return new MapField(meta(m, { kind: "map", hint: m.hint }), m.item);
}

// -- helpers for checks and compile steps -------------------------------------

/** An empty record without a prototype. */
export function emptyRecord<T>(): Record<string, T> {
  return nullProto<Record<string, T>>({});
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Whether `host` is off loopback, for the rules that refuse an exposed port.
 * A host that failed its own check (undefined; already reported) counts as off.
 */
export function offLoopback(host: string | undefined): boolean {
  return host === undefined || !isLoopback(host);
}
