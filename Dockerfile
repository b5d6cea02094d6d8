# syntax=docker/dockerfile:1
# toolgate — authorization sidecar for AI agents (see docs/deploy.md).
#
#   docker build -t toolgate:0.1.0 .
#   scripts/image.sh build     # the same build without a Docker daemon (buildah)
#
# Running it: the quick start in docs/deploy.md. A port published with -p
# needs TOOLGATE_AGENT_HOST=0.0.0.0, and off loopback the agent port must
# verify callers: identity.mode jwt with a key of yours
# (TOOLGATE_IDENTITY_MODE=jwt, TOOLGATE_IDENTITY_JWT_PUBLIC_KEY_FILE or
# _JWKS_URL). The default trusted mode there exits with config_invalid.
#
# Stages: build (npm ci + tsc) → runtime (production dependencies + what runs).
# The base is pinned by exact tag; pin it by digest too in your own registry
# (FROM node:24.21.0-bookworm-slim@sha256:…) if your policy asks for it.

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ---------------------------------------------------------------- build ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# -------------------------------------------------------------- runtime ----
FROM ${NODE_IMAGE} AS runtime

# tini as PID 1: forwards SIGTERM/SIGINT to node (toolgate stops its servers,
# flushes queued spans and closes its state on SIGTERM) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production

# Production dependencies only: the `node` devDependency and every other dev
# tool stay out; no install script is needed at run time.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# Only what runs. config/dev holds the PUBLIC development key pair that the
# default configuration trusts (development only; a real deployment sets
# control.jwt.* and identity.jwt.* — see docs/deploy.md).
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY bundles ./bundles
COPY schemas ./schemas
COPY config/dev ./config/dev
COPY scripts/healthcheck.mjs ./scripts/healthcheck.mjs

# Non-root (numeric, so runAsNonRoot can verify it). State lives in
# /var/lib/toolgate (mount a volume there); real bundles and config are
# mounted read-only under /etc/toolgate.
RUN groupadd --system --gid 10001 toolgate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/toolgate --shell /usr/sbin/nologin toolgate \
 && mkdir -p /var/lib/toolgate /etc/toolgate/bundles \
 && chown 10001:10001 /var/lib/toolgate \
 && chmod 0700 /var/lib/toolgate

# The agent port stays on loopback (toolgate's default, 127.0.0.1:8181): the
# agent runs in the same pod. With plain Docker set TOOLGATE_AGENT_HOST=0.0.0.0
# with identity.mode jwt (see above) and publish to 127.0.0.1 only. Ports and hosts are deliberately not set here:
# environment variables win over a config file, so an ENV line would silently
# override a mounted /etc/toolgate/config.yaml (TOOLGATE_CONFIG). Without a
# bundle setting the embedded reference bundle bundles/support-triage.tar.gz
# is served; mount real bundles under /etc/toolgate/bundles.
ENV TOOLGATE_STATE_DIR=/var/lib/toolgate

VOLUME ["/var/lib/toolgate"]
EXPOSE 8181 8182
USER 10001:10001

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "/app/scripts/healthcheck.mjs"]

# --disable-proto=delete: no Object.prototype.__proto__ accessor in any realm
# (main thread and workers), so untrusted JSON cannot replace a prototype
# through it (defence in depth; docs/security.md).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--disable-proto=delete", "/app/bin/toolgate.js"]
CMD ["serve"]
