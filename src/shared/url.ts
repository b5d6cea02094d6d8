/**
 * A URL as messages and logs may show it: no user info and no query string
 * (credentials and tokens hide there); "(invalid URL)" when it does not parse.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    u.search = u.search ? "?…" : "";
    return u.toString();
  } catch {
    return "(invalid URL)";
  }
}
