# syntax=docker/dockerfile:1
# cad-router image: build TypeScript in one stage, ship only dist/ + production deps in the next.

# ---- build -----------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app

# `npm ci` runs `prepare` (tsc -p tsconfig.build.json), so the sources (tsconfig*.json, src/,
# migrations/, rules/) must be present before it, not only package.json and package-lock.json.
# .dockerignore keeps node_modules, dist, .git, .env etc. out of the context.
COPY . .

# npm ci installs all deps (tsc is a dev dependency) and compiles into dist/ through `prepare`;
# then drop dev dependencies so the runtime stage copies production node_modules only
# (prune runs no lifecycle scripts, so tsc is not needed for it).
# The cache mount only speeds up repeated builds; it is not part of the image.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund \
 && test -f dist/src/main.js \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ---------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime
WORKDIR /app

# HOST defaults to 127.0.0.1 in the app; inside a container it must listen on all interfaces.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000

# package.json is needed at runtime for "type": "module" (ESM resolution of dist/*.js).
# Files stay root-owned and read-only for the app user: it never writes to /app.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The dashboard's static files (served by the api role at /dashboard).
COPY --from=build /app/public ./public

# The official image ships an unprivileged `node` user (uid 1000); never run as root.
USER node

EXPOSE 3000

# Liveness only (/healthz); /readyz (Postgres and migrations; Redis reported as "degraded") is for load balancers.
# No curl in slim images, so use node's built-in fetch. Only the `api` role serves HTTP:
# containers running ROLE=relay or ROLE=worker alone must disable this healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"]

# close-with-grace drains on SIGTERM (SHUTDOWN_GRACE_MS, default 10 s).
STOPSIGNAL SIGTERM

# Run node directly (not `npm start`) so node is PID 1's direct target and receives SIGTERM.
# Pending migrations are applied (and the database created if missing) on start.
CMD ["node", "dist/src/main.js"]
