#!/usr/bin/env bash
# Prints the path of a Chromium the console's browser test can drive
# (test/e2e/console-browser.test.ts, through playwright-core's executablePath;
# Playwright's own browser download is not used). Installs Debian's chromium
# package when none is found and this runs as root; otherwise says how.
#   scripts/chromium.sh            -> e.g. /usr/bin/chromium
#   TOOLGATE_CHROMIUM=/path/to/chrome scripts/chromium.sh   -> that path (if executable)
# Nothing is cached in the repository. Headless runs as root need --no-sandbox
# (Chromium's sandbox refuses root: "Chromium sandboxing failed!", checked with
# Debian's chromium 156); test/helpers/browser.ts passes it only as root.
set -euo pipefail

if [ -n "${TOOLGATE_CHROMIUM:-}" ]; then
  [ -x "$TOOLGATE_CHROMIUM" ] || { echo "chromium.sh: TOOLGATE_CHROMIUM=$TOOLGATE_CHROMIUM is not executable" >&2; exit 1; }
  echo "$TOOLGATE_CHROMIUM"
  exit 0
fi

find_chromium() {
  local c
  for c in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

if path="$(find_chromium)"; then
  echo "$path"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  cat >&2 <<'MSG'
chromium.sh: no Chromium found, and installing one needs root. Either
  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium
(Debian/Ubuntu), or point TOOLGATE_CHROMIUM at a Chrome/Chromium executable.
MSG
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "chromium.sh: no Chromium found and no apt-get to install one; set TOOLGATE_CHROMIUM to a Chrome/Chromium executable" >&2
  exit 1
}
echo "chromium.sh: installing Debian's chromium (first run only; may take minutes)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y --no-install-recommends chromium >&2
path="$(find_chromium)" || { echo "chromium.sh: chromium was installed but is not on PATH" >&2; exit 1; }
echo "$path"
