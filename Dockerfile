# syntax=docker/dockerfile:1
# Build stage: compiles TypeScript and builds sqlite3's native addon.
FROM node:20-bookworm-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY packages ./packages
COPY src ./src
# `npm ci` runs the `prepare` script, which compiles the client package
# (packages/client, an npm workspace) and then src/ to dist/.
RUN npm ci && npm prune --omit=dev

# Runtime stage: production dependencies and compiled code only, as a non-root user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    CACHE_DIR=/data/cache \
    AUDIT_DIR=/data/audit \
    GATEWAY_CONFIG=/app/config/gateway.yaml
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# node_modules/@recording-gateway/client links here: its package.json and compiled code only.
COPY --from=build /app/packages/client/package.json ./packages/client/
COPY --from=build /app/packages/client/dist ./packages/client/dist
COPY package.json ./
COPY config ./config
# /app is root's: what the gateway writes (the cache, and the audit trail when
# the config turns `audit` on; AUDIT_DIR puts it here, whatever audit.dir says)
# lives under /data, on volumes that outlive the container. 0750: recordings
# are personal data, and a new named volume takes this mode (the gateway
# leaves a cache directory that exists as it is).
RUN mkdir -p /data/cache /data/audit && chown -R node:node /data && chmod 0750 /data/cache /data/audit
USER node
EXPOSE 8080
VOLUME ["/data/cache", "/data/audit"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
ENTRYPOINT ["node", "--max-semi-space-size=4", "dist/cli.js"]
CMD ["serve"]
