#!/usr/bin/env bash
# Builds the pinned Go tools toolgate needs for policy authoring and tests,
# once, into the git-ignored .tools/bin. Prints the path of the requested tool.
#   scripts/tools.sh opa      -> path to the pinned opa CLI
#   scripts/tools.sh jaeger   -> path to the pinned Jaeger (all-in-one, v2) for e2e tests
#   scripts/tools.sh registry -> path to a pinned OCI registry (go-containerregistry) for the OCI bundle test
#   scripts/tools.sh helm     -> path to the pinned helm CLI (chart lint/template tests)
#   scripts/tools.sh k8s-validate -> the offline manifest validator in tools/k8s-validate
#   scripts/tools.sh promtool -> path to the pinned promtool (alert rules check and unit tests)
#   scripts/tools.sh regal    -> path to the pinned Regal (Rego linter; policy test lints with it)
# Pins: `go install module@version` where the module allows it; otherwise a
# tools module under tools/<name>/ (go.mod + go.sum, `tool` directive).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"

declare -A MODULE=(
  [opa]="github.com/open-policy-agent/opa@v1.22.4"
  [jaeger]="tools/jaeger:github.com/jaegertracing/jaeger/cmd/jaeger"
  [registry]="github.com/google/go-containerregistry/cmd/registry@v0.22.1"
  [helm]="helm.sh/helm/v3/cmd/helm@v3.22.0"
  [k8s-validate]="tools/k8s-validate:."
  [promtool]="github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
  [regal]="tools/regal:github.com/open-policy-agent/regal"
)

tool="${1:?usage: scripts/tools.sh <tool>}"
spec="${MODULE[$tool]:-}"
[ -n "$spec" ] || { echo "tools.sh: unknown tool '$tool'" >&2; exit 2; }
stamp="$bin/.$tool.version"
if [[ "$spec" == tools/* ]]; then
  dir="${spec%%:*}"
  pkg="${spec#*:}"
  want="$spec $(sha256sum "$root/$dir/go.mod" | cut -c1-16)"
  # A tools module with its own Go source is rebuilt when that source changes.
  if compgen -G "$root/$dir/*.go" >/dev/null; then
    want="$want $(cat "$root/$dir"/*.go | sha256sum | cut -c1-16)"
  fi
else
  want="$spec"
fi
if [ ! -x "$bin/$tool" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  command -v go >/dev/null || { echo "tools.sh: Go is needed to build $tool (see README)" >&2; exit 1; }
  echo "tools.sh: building $tool into .tools/bin (first run only; may take minutes)" >&2
  if [[ "$spec" == tools/* ]]; then
    (cd "$root/$dir" && CGO_ENABLED=0 go build -trimpath -o "$bin/$tool" "$pkg") >&2
  else
    GOBIN="$bin" CGO_ENABLED=0 go install -trimpath "$spec" >&2
  fi
  echo "$want" > "$stamp"
fi
echo "$bin/$tool"
