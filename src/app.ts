import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod'
import type { Redis } from 'ioredis'
import { z } from 'zod'
import type { Config } from './config.js'
import type { Db } from './db/connect.js'
import rateLimit from '@fastify/rate-limit'
import { createAssignmentFeed, feedRoutes } from './assignments/feed-routes.js'
import { assignmentRoutes } from './assignments/routes.js'
import { createKeyCache, type KeyCache } from './auth/key-cache.js'
import { createNotifications, LISTEN_APPLICATION_NAME, type Notifications } from './db/listener.js'
import { authPlugin } from './auth/plugin.js'
import { authRoutes } from './auth/routes.js'
import { AppError } from './http/errors.js'
import { callRoutes } from './calls/routes.js'
import { CALL_ID_MAX_LENGTH } from './calls/schemas.js'
import { createCallService } from './calls/service.js'
import { eidoRoutes } from './eido/routes.js'
import { healthRoutes } from './http/health.js'
import { dashboardRoutes } from './dashboard/routes.js'
import { createMetrics, instrumentCallService, instrumentHttp, type Metrics } from './metrics/metrics.js'
import { metricsRoutes } from './metrics/routes.js'
import { reportRoutes } from './reports/routes.js'
import { registerOpenApi } from './http/openapi.js'
import { breakerStore } from './http/rate-limit.js'
import { queueAdminRoutes } from './queue/admin-routes.js'
import { createRedisBreaker } from './queue/redis-breaker.js'
import { PROBE_COMMAND_TIMEOUT_MS } from './queue/redis.js'
import { registerJsonBodyParser } from './http/json-body.js'
import { clientErrorHandler, frameworkErrorHandler, registerProblemHandlers, routePaths } from './http/problem.js'
import { registerSecurityHeaders, securityHeaders } from './http/security-headers.js'
import { refuseUnstorableText } from './http/storable.js'
import { loggerOptions } from './logger.js'
import { createRuleSetLifecycle } from './rule-sets/lifecycle.js'
import type { RuleSetRegistry } from './rule-sets/registry.js'
import type { Tracing } from './telemetry/tracing.js'
import { caseLinkRoutes } from './case-links/routes.js'
import { evaluateRoutes } from './rule-sets/evaluate-routes.js'
import { replayRoutes } from './rule-sets/replay-routes.js'
import { createShadowSource, type ShadowSource } from './rule-sets/shadow.js'
import { ruleSetRoutes } from './rule-sets/routes.js'

/** The version of the HTTP contract (v1 paths), published in the OpenAPI document. */
export const API_VERSION = '1.0.0'

export interface AppDeps {
  config: Pick<
    Config,
    'BODY_LIMIT_BYTES' | 'RETRY_AFTER_SECONDS' | 'AUTH_CACHE_MS' | 'AUTH_CACHE_SIZE' | 'FOLLOW_UP_DEADLINE_HOURS' | 'FOLLOW_UP_DUE_HOURS' | 'LOG_LEVEL' | 'RATE_LIMIT_PER_MINUTE' | 'BULLMQ_PREFIX' | 'DATABASE_URL' | 'FEED_POLL_MS' | 'FEED_READ_GAP_MS' | 'FEED_HEARTBEAT_MS' | 'REDIS_BREAKER_OPEN_MS'
  > &
    Partial<Pick<Config, 'INGEST_BATCH_MAX' | 'INGEST_BATCH_CONCURRENCY' | 'INGEST_BATCH_HOLD_MS' | 'INGEST_QUEUE_MAX' | 'TRUST_PROXY'>>
  db: Db
  /**
   * Readiness, the rate limiter's counters and the assignment feed's wake-ups (it publishes on this
   * connection and subscribes on a duplicate). Ingest never needs it: the outbox relay carries work
   * to Redis, and while Redis fails to answer the app's breaker keeps requests from waiting on it
   * (the limiter counts in the process meanwhile).
   */
  redis: Redis
  ruleSets: RuleSetRegistry
  /** A pino logger to use instead of one built from LOG_LEVEL (tests capture output this way). */
  logger?: FastifyBaseLogger
  now?: () => Date
  /** OpenTelemetry tracing (src/telemetry/tracing.ts), when configured. */
  tracing?: Tracing
  /** Prometheus metrics of this app; one registry per app unless main.ts shares it with the relay and workers. */
  metrics?: Metrics
  /** API keys as looked up recently; built from db and config when absent (and then closed with the app). */
  keys?: KeyCache
  /** Shadow mode's setting, kept in memory per instance; built from db and ruleSets when absent. */
  shadow?: ShadowSource
  /**
   * The process's one LISTEN connection (key changes, the feed bridge; main.ts shares it with the
   * rule-set registry and the relay); one of the app's own when absent, closed with the app.
   */
  notifications?: Notifications
}

const NO_QUERY = z.object({}).strict()

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Builds the HTTP API without listening; main.ts and the tests both use it. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config } = deps
  const now = deps.now ?? (() => new Date())
  // Filled by the onRoute hook below, read when the router answers 414 (to name the parameter).
  const paths = routePaths()
  // Helmet's, worked out once. The router's own errors (414, a malformed URL) are answered before
  // any hook runs, so its error handler sets them too.
  const headers = securityHeaders({
    // Swagger UI and the dashboard load their own scripts and styles from this origin only. Not
    // helmet's upgrade-insecure-requests: the service speaks plain HTTP (TLS ends in front of it,
    // where there is TLS), and a browser told to upgrade fetched every asset over https from it,
    // a blank page on any host but localhost.
    contentSecurityPolicy: { directives: { 'script-src': ["'self'"], 'style-src': ["'self'", "'unsafe-inline'"], 'img-src': ["'self'", 'data:'], 'upgrade-insecure-requests': null } },
  })
  const app = Fastify({
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: loggerOptions(config.LOG_LEVEL) }),
    bodyLimit: config.BODY_LIMIT_BYTES,
    // Behind a load balancer, the client's address (audit records, the per-address rate limit)
    // is the one it forwards, from the proxies named only.
    trustProxy: config.TRUST_PROXY ?? false,
    requestTimeout: 30_000,
    connectionTimeout: 60_000,
    keepAliveTimeout: 65_000,
    // While the server drains (SIGTERM), a request that still arrives on an open keep-alive
    // connection is served, with `Connection: close`, instead of Fastify's bare 503 (no Retry-After,
    // not problem+json): the database stays open until the HTTP server has closed.
    return503OnClosing: false,
    // A CAD's or proxy's request id is kept when it is sane, so log lines can be matched across systems.
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    ajv: { customOptions: { removeAdditional: false } },
    // The longest path parameter is a callId: every id POST accepts must read back (the default, 100,
    // answered 414). The router measures the decoded value, so percent-encoding does not count.
    routerOptions: { maxParamLength: CALL_ID_MAX_LENGTH },
    frameworkErrors: frameworkErrorHandler(config.RETRY_AFTER_SECONDS, { routes: paths, maxParamLength: CALL_ID_MAX_LENGTH, headers }),
    clientErrorHandler: clientErrorHandler(headers),
  }).withTypeProvider<ZodTypeProvider>()
  app.addHook('onRoute', (route) => {
    paths.add(route.method, route.url)
    // Unknown fields are refused, query parameters included: `?dryRun=true` on a move must not
    // pass silently and move the assignment for real. Only /v1: the dashboard, docs and bull-board
    // are not ours. (`query` is Fastify's other name for `querystring`.)
    const declared = route.schema?.querystring ?? (route.schema as { query?: unknown } | undefined)?.query
    if (route.url.startsWith('/v1/') && !declared) route.schema = { ...route.schema, querystring: NO_QUERY }
  })

  // Before any route or hook, so all of them are traced.
  if (deps.tracing) await app.register(deps.tracing.fastify.plugin())

  // The API speaks JSON only; without this, a text/plain body would be parsed and fail validation
  // with a misleading 400 instead of a 415.
  app.removeContentTypeParser('text/plain')
  registerJsonBodyParser(app)
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  // Fastify ends the keep-alive connections that are idle when close() starts, and no others: a
  // request in flight then keeps its connection open after its answer, for keepAliveTimeout (65 s),
  // and the close waits for it, past the shutdown's grace period (the workers never hand their jobs
  // back). Answered while closing, it tells the client to go, and the connection ends with it.
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id)
    if (closing) reply.header('connection', 'close')
  })
  registerProblemHandlers(app, config.RETRY_AFTER_SECONDS)
  refuseUnstorableText(app)
  registerSecurityHeaders(app, headers)
  await registerOpenApi(app, API_VERSION)
  let notifications = deps.notifications
  if (!notifications) {
    // In whichever order the hooks run, a subscription closed after its connection is a no-op.
    const own = createNotifications({ databaseUrl: config.DATABASE_URL, applicationName: LISTEN_APPLICATION_NAME, log: app.log })
    app.addHook('onClose', () => own.close())
    notifications = own
  }
  // API keys as looked up recently (src/auth/key-cache.ts); it starts listening on first use.
  let keys = deps.keys
  if (!keys) {
    const own = createKeyCache({ db: deps.db, ttlMs: config.AUTH_CACHE_MS, maxEntries: config.AUTH_CACHE_SIZE, notifications, log: app.log })
    app.addHook('onClose', () => own.close())
    keys = own
  }
  await app.register(authPlugin, { keys })
  const metrics = deps.metrics ?? createMetrics()
  // Every Redis command a request waits on goes through it: one that Redis fails to answer makes
  // the requests after it do without Redis for a while (src/queue/redis-breaker.ts).
  const breaker = createRedisBreaker({
    redis: deps.redis,
    timeoutMs: PROBE_COMMAND_TIMEOUT_MS,
    openMs: config.REDIS_BREAKER_OPEN_MS,
    log: app.log,
    onChange: (state, opened) => {
      metrics.redisBreakerOpen.set(state === 'closed' ? 0 : 1)
      if (opened) metrics.redisBreakerOpenings.inc()
    },
  })
  app.addHook('onClose', async () => breaker.stop())
  await app.register(rateLimit, {
    // After authentication, so the limit is per key; unauthenticated requests count per address.
    hook: 'preHandler',
    max: config.RATE_LIMIT_PER_MINUTE,
    timeWindow: 60_000,
    // Redis's count while it answers, this process's own while the breaker is open: never a CAD
    // post refused for Redis's sake, never a flood let through unlimited (src/http/rate-limit.ts).
    store: breakerStore(deps.redis, breaker, `${config.BULLMQ_PREFIX}:rate:`),
    // The store never fails (it falls back to its own count); were it to, the request goes through.
    skipOnError: true,
    keyGenerator: (req) => req.principal?.keyId ?? req.ip,
    allowList: (req) => req.routeOptions.config.access === 'public',
    errorResponseBuilder: (_req, ctx) => new AppError('rate-limited', `limit of ${ctx.max} requests per minute reached; retry in ${Math.ceil(ctx.ttl / 1000)} s`),
  })

  instrumentHttp(app, metrics)
  const shadow = deps.shadow ?? (await createShadowSource(deps.db, deps.ruleSets))
  const calls = instrumentCallService(
    createCallService({
      db: deps.db,
      ruleSets: deps.ruleSets,
      followUpDeadlineHours: config.FOLLOW_UP_DEADLINE_HOURS,
      followUpDueHours: config.FOLLOW_UP_DUE_HOURS,
      shadow,
      batch: {
        ...(config.INGEST_BATCH_MAX ? { maxSize: config.INGEST_BATCH_MAX } : {}),
        ...(config.INGEST_BATCH_CONCURRENCY ? { concurrency: config.INGEST_BATCH_CONCURRENCY } : {}),
        ...(config.INGEST_BATCH_HOLD_MS !== undefined ? { holdMs: config.INGEST_BATCH_HOLD_MS } : {}),
        ...(config.INGEST_QUEUE_MAX ? { maxQueued: config.INGEST_QUEUE_MAX } : {}),
        onBatch: (size) => metrics.ingestBatchSize.observe(size),
      },
      ...(deps.now ? { now: deps.now } : {}),
    }),
    metrics,
  )
  await app.register(healthRoutes, { db: deps.db, redis: deps.redis, breaker, retryAfterSeconds: config.RETRY_AFTER_SECONDS })
  await app.register(callRoutes, { calls, db: deps.db, ruleSets: deps.ruleSets, now })
  const feed = createAssignmentFeed({
    db: deps.db,
    databaseUrl: config.DATABASE_URL,
    notifications,
    redis: deps.redis,
    prefix: config.BULLMQ_PREFIX,
    log: app.log,
    pollMs: config.FEED_POLL_MS,
    readGapMs: config.FEED_READ_GAP_MS,
    heartbeatMs: config.FEED_HEARTBEAT_MS,
  })
  app.addHook('onClose', () => feed.stop())
  await app.register(assignmentRoutes, { db: deps.db, feed, ...(deps.now ? { now: deps.now } : {}) })
  await app.register(feedRoutes, { feed, keys })
  await app.register(authRoutes, { db: deps.db, keys })
  await app.register(eidoRoutes, { calls, db: deps.db, ruleSets: deps.ruleSets, now })
  await app.register(reportRoutes, { db: deps.db, now })
  await app.register(metricsRoutes, { db: deps.db, metrics, now })
  await app.register(ruleSetRoutes, { db: deps.db, lifecycle: createRuleSetLifecycle({ db: deps.db, registry: deps.ruleSets, shadow, ...(deps.now ? { now: deps.now } : {}) }) })
  await app.register(dashboardRoutes)
  await app.register(caseLinkRoutes, { db: deps.db, now })
  await app.register(evaluateRoutes, { db: deps.db, ruleSets: deps.ruleSets, now })
  await app.register(replayRoutes, { db: deps.db, ruleSets: deps.ruleSets, shadow, now })
  await app.register(queueAdminRoutes, { db: deps.db, connection: deps.redis, breaker, bullmqPrefix: config.BULLMQ_PREFIX })
  return app
}
