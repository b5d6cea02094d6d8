/**
 * The console's one stylesheet and its optional script, served from memory
 * (no build step, nothing to copy into dist/). Colours meet WCAG AA (≥ 4.5:1
 * for text on its background); focus is always visible; one column on a
 * phone.
 */
export const CONSOLE_CSS = `
:root { --fg: #1a1a1a; --muted: #4a4a4a; --bg: #ffffff; --panel: #f4f5f7; --line: #c9ccd1;
  --link: #0b57b0; --ok: #1d6b2f; --bad: #a8201a; --warn: #7a4b00; --focus: #0b57b0; }
* { box-sizing: border-box; }
html { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
body { margin: 0; }
a { color: var(--link); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.skip { position: absolute; left: -9999px; top: 0; background: var(--bg); padding: .5rem; }
.skip:focus { left: .5rem; }
header { background: var(--panel); border-bottom: 1px solid var(--line); padding: .5rem 1rem; display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; justify-content: space-between; }
header .brand { margin: 0; font-weight: 600; }
header .brand a { color: var(--fg); text-decoration: none; }
.deployment { font-weight: 400; color: var(--muted); margin-left: .5rem; }
nav { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; }
nav ul { list-style: none; margin: 0; padding: 0; display: flex; gap: 1rem; }
nav a[aria-current="page"] { font-weight: 700; }
.logout { display: flex; gap: .5rem; align-items: center; margin: 0; }
.who { color: var(--muted); }
main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
main:focus { outline: none; }
h1 { font-size: 1.6rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
ul.requests, ul.switches { list-style: none; padding: 0; margin: 0; }
li.request, ul.switches > li { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; margin: 0 0 .75rem; background: var(--bg); }
li.request .title { margin: 0 0 .25rem; }
.meta, .args-inline { margin: .15rem 0; color: var(--muted); font-size: .95rem; overflow-wrap: anywhere; }
.args-inline code { color: var(--fg); }
.arg { font-weight: 600; color: var(--fg); }
.status { display: inline-block; font-size: .85rem; padding: 0 .4rem; border-radius: 4px; border: 1px solid var(--line); background: var(--panel); color: var(--fg); }
.status-pending { color: var(--warn); border-color: var(--warn); }
.status-denied, .status-revoked, .status-expired { color: var(--bad); border-color: var(--bad); }
.status-used, .status-approved_unused { color: var(--ok); border-color: var(--ok); }
.left { color: var(--muted); font-size: .9rem; }
.reasons { margin: .25rem 0; padding-left: 1.25rem; }
.code { color: var(--muted); font-family: ui-monospace, monospace; font-size: .85rem; }
.justification { margin: .5rem 0; }
.justification figcaption { color: var(--muted); font-size: .9rem; }
blockquote { margin: .25rem 0; padding: .25rem .75rem; border-left: 4px solid var(--line); white-space: pre-wrap; overflow-wrap: anywhere; }
.whynot { color: var(--bad); }
.error { color: var(--bad); font-weight: 600; }
.note { color: var(--warn); }
.empty { color: var(--muted); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; white-space: pre-wrap; }
dl.facts { display: grid; grid-template-columns: minmax(8rem, max-content) 1fr; gap: .25rem 1rem; margin: .5rem 0; }
dl.facts > div { display: contents; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
caption { text-align: left; color: var(--muted); padding: .25rem 0; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: .35rem .5rem; overflow-wrap: anywhere; }
ul.plain { list-style: none; margin: 0; padding: 0; }
.timeline { padding-left: 1.25rem; }
.timeline li { margin-bottom: .35rem; overflow-wrap: anywhere; }
.timeline time { color: var(--muted); font-size: .9rem; }
label { display: block; font-weight: 600; margin: .5rem 0 .25rem; }
.check { display: flex; gap: .5rem; align-items: center; }
.check label { display: inline; font-weight: 400; margin: 0; }
input, textarea, select { font: inherit; color: var(--fg); background: var(--bg); border: 1px solid #767676; border-radius: 4px; padding: .4rem .5rem; width: 100%; max-width: 32rem; }
input[type="checkbox"] { width: auto; }
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0; padding: .5rem 1rem; }
button, .button { font: inherit; display: inline-block; min-height: 44px; padding: .5rem 1rem; border-radius: 6px; border: 1px solid transparent; cursor: pointer; text-decoration: none; color: #fff; background: var(--link); }
button { white-space: nowrap; }
.setswitch > button, ul.switches form { margin-top: .75rem; }
button.approve { background: var(--ok); }
button.deny { background: var(--bad); }
button.secondary { background: var(--bg); color: var(--fg); border-color: #767676; min-height: 36px; padding: .25rem .75rem; }
.buttons { display: flex; gap: .75rem; margin-top: .75rem; flex-wrap: wrap; }
ul.users { list-style: none; padding: 0; display: grid; gap: .5rem; }
ul.users button { min-width: 8rem; }
.roles { color: var(--muted); }
@media (max-width: 40rem) {
  dl.facts { grid-template-columns: 1fr; }
  dt { margin-top: .4rem; }
  .buttons button { flex: 1 1 45%; }
  th, td { padding: .3rem; }
}
`;

/** Optional: counts the time left down. The pages work without it. */
export const CONSOLE_JS = `"use strict";
(function () {
  function fmt(s) {
    if (s <= 0) return "expired";
    if (s < 60) return s + " s left";
    if (s < 3600) return Math.floor(s / 60) + " min left";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h + " h" + (m > 0 ? " " + m + " min" : "") + " left";
  }
  function tick() {
    var els = document.querySelectorAll("[data-expires]");
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-expires") || "");
      if (!isNaN(t)) els[i].textContent = fmt(Math.floor((t - Date.now()) / 1000));
    }
  }
  setInterval(tick, 15000);
})();
`;
