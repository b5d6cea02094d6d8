/**
 * A tiny HTML template helper: every interpolation is escaped unless it is
 * already `Html` (the result of another `html` template, or `raw` on a
 * constant). Arrays are joined; null, undefined and false render nothing.
 * Nothing from outside ever reaches `raw`.
 */

/** Markup that is safe to emit as it is. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
  "`": "&#96;",
};

/** Escapes text for an HTML element's content or a quoted attribute value. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => ESCAPES[c] ?? c);
}

function render(v: unknown): string {
  if (v === null || v === undefined || v === false) return "";
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join("");
  if (typeof v === "string") return escapeHtml(v);
  if (typeof v === "number" || typeof v === "bigint" || v === true) return escapeHtml(String(v));
  return escapeHtml(JSON.stringify(v) ?? "");
}

/** The template tag: `html\`<p>${text}</p>\`` escapes `text`. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? "");
  return new Html(out);
}

/** Marks a constant string (never outside input) as markup. */
export function raw(s: string): Html {
  return new Html(s);
}

/** Only http(s) URLs may become links; anything else (javascript:, data:) yields undefined. */
export function safeHref(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : undefined;
  } catch {
    return undefined;
  }
}
