#!/usr/bin/env bash
# Builds the pinned Go tools toolgate needs for policy authoring and tests,
# once, into the git-ignored .tools/bin. Prints the path of the requested tool.
#   scripts/tools.sh opa      -> path to the pinned opa CLI
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"

declare -A MODULE=(
  [opa]="github.com/open-policy-agent/opa@v1.22.4"
)

tool="${1:?usage: scripts/tools.sh <tool>}"
mod="${MODULE[$tool]:-}"
[ -n "$mod" ] || { echo "tools.sh: unknown tool '$tool'" >&2; exit 2; }
version="${mod##*@}"
stamp="$bin/.$tool.version"
if [ ! -x "$bin/$tool" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$mod" ]; then
  echo "tools.sh: building $mod into .tools/bin (first run only)" >&2
  GOBIN="$bin" GOFLAGS="-trimpath" CGO_ENABLED=0 go install "$mod" >&2
  echo "$mod" > "$stamp"
fi
echo "$bin/$tool"
