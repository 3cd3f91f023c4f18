# syntax=docker/dockerfile:1
# sealbox: envelope-encryption sidecar. Multi-stage: build with dev dependencies, ship production
# dependencies only, as a non-root user, on a read-only root filesystem (state lives in volumes).

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY examples ./examples
# Generates the proto types (src/gen) and compiles to dist/.
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    # glibc keeps large buffers instead of trimming and re-faulting them on every 1 MiB chunk
    # (src/cli/launch.ts SERVER_ENV says why, with the measurements).
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    SEALBOX_DATA_DIR=/var/lib/sealbox \
    SEALBOX_SOCKET=/run/sealbox/sealbox.sock \
    SEALBOX_METRICS=0.0.0.0:9464
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
COPY proto ./proto
# /run/sealbox holds the Unix socket (an emptyDir shared with the app container); /var/lib/sealbox
# holds sealbox's own state. Both are volumes, so the root filesystem can be mounted read-only.
RUN mkdir -p /run/sealbox /var/lib/sealbox && chown node:node /run/sealbox /var/lib/sealbox
VOLUME ["/run/sealbox", "/var/lib/sealbox"]
USER node
# Readiness comes from the key watcher's last result, never a vault call per probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# V8 flags on node's command line (NODE_OPTIONS refuses them); src/cli/launch.ts says why.
ENTRYPOINT ["node", "--initial-old-space-size=128", "dist/src/cli.js"]
CMD ["serve", "--config", "/etc/sealbox/config.yaml"]
