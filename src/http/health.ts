import { sql } from 'kysely'
import type { FastifyBaseLogger } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import type { Redis } from 'ioredis'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { pendingMigrations } from '../db/migrate.js'
import { withTimeout } from '../lib/timeout.js'
import type { RedisBreaker } from '../queue/redis-breaker.js'

export interface HealthOptions {
  db: Db
  redis: Redis
  /** While it is open, readiness reports Redis away without asking it (which would wait out the time-out). */
  breaker: RedisBreaker
  retryAfterSeconds: number
}

const check = z.object({
  ok: z.boolean(),
  detail: z.string().optional().describe('Why not, in words of the service’s own; the log line of the failed check has the error itself'),
})
const readiness = z.object({
  status: z
    .enum(['ready', 'degraded', 'not_ready'])
    .describe('degraded: Redis is unreachable. Call events are still taken and stored; their assignments wait in the outbox until it is back'),
  checks: z.object({ postgres: check, migrations: check, redis: check }),
})

/**
 * The checks. A driver's error names hosts, addresses and database user names, and readiness needs
 * no key: the answer gives the fixed `failed`, and only the log line has the error (no personal data).
 * Load balancers poll every few seconds: a check that keeps failing with the same error is logged
 * once at warn, then at debug until its error changes or it passes again.
 */
function prober() {
  const last = new Map<string, string>()
  // The poll's own logger: its line carries the request id, as every other request's lines do.
  return async (log: FastifyBaseLogger, name: string, failed: string, fn: () => Promise<string | undefined>): Promise<z.infer<typeof check>> => {
    try {
      const detail = await fn()
      last.delete(name)
      return detail ? { ok: false, detail } : { ok: true }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      const level = last.get(name) === message ? 'debug' : 'warn'
      last.set(name, message)
      log[level]({ check: name, err: { code: (err as { code?: unknown }).code, message } }, 'readiness check failed')
      return { ok: false, detail: failed }
    }
  }
}

/**
 * `fn`, at most one call in flight: a call while one runs shares its outcome. Readiness is polled
 * every few seconds by every load balancer; while Postgres is silent each of its queries holds a
 * pooled connection until the query bound (DATABASE_QUERY_TIMEOUT_MS, 10 s) drops it, long after
 * the poll gave up at 2 s, and polls that each asked again would hold a good part of the pool that
 * ingest needs when Postgres returns. So a poll waits 2 s at most, but what it waits on is shared.
 */
function oneAtATime<T>(fn: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined
  return () =>
    (running ??= fn().finally(() => {
      running = undefined
    }))
}

export const healthRoutes: FastifyPluginAsyncZod<HealthOptions> = async (app, { db, redis, breaker, retryAfterSeconds }) => {
  const readOnly = oneAtATime(async () => (await sql<{ read_only: string }>`select current_setting('transaction_read_only') as read_only`.execute(db)).rows[0]?.read_only)
  const pending = oneAtATime(() => pendingMigrations(db))
  const probe = prober()

  app.get(
    '/healthz',
    { config: { access: 'public' }, schema: { tags: ['health'], security: [], operationId: 'getHealth', summary: 'The process is alive', response: { 200: z.object({ status: z.literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    {
      config: { access: 'public' },
      schema: {
        tags: ['health'],
        security: [],
        operationId: 'getReadiness',
        summary: 'Ready for traffic: Postgres reachable and migrations applied (Redis is reported, not required)',
        description:
          'For load balancers. 503 with Retry-After when Postgres is unreachable or read-only (a standby) or migrations are pending. An instance without Redis ' +
          'stays in service (200, `degraded`), even one started during a Redis outage: ingest needs only Postgres, and taking every ' +
          'instance out of a load balancer would refuse the calls the outbox exists to keep. A deploy gate should also require ' +
          '`checks.redis.ok` (a wrong REDIS_URL is `degraded` too); alert on `degraded` and on `cad_router_outbox_lag_seconds`.',
        response: { 200: readiness, 503: readiness },
      },
    },
    async (req, reply) => {
      const [postgres, migrations, redisCheck] = await Promise.all([
        probe(req.log, 'postgres', 'Postgres did not answer or refused the connection; the log says why', async () => {
          // A standby (mid-failover) or a primary set read-only answers, but every ingest would fail.
          return (await withTimeout(readOnly(), 2000)) === 'on' ? 'read-only (a standby, or default_transaction_read_only): ingest cannot write' : undefined
        }),
        probe(req.log, 'migrations', 'the applied migrations could not be read from Postgres; the log says why', async () => {
          const names = await withTimeout(pending(), 2000)
          return names.length ? `pending: ${names.join(', ')}` : undefined
        }),
        probe(req.log, 'redis', 'Redis did not answer; the log says why', async () => {
          // Its reason was logged when the breaker opened.
          if (!breaker.closed) return 'Redis is not answering, and is not asked until a probe gets an answer'
          const pong = await breaker.run(() => redis.ping())
          return pong === 'PONG' ? undefined : `unexpected answer ${pong}`
        }),
      ])
      const ok = postgres.ok && migrations.ok
      if (!ok) reply.header('retry-after', String(retryAfterSeconds))
      const status = !ok ? 'not_ready' : redisCheck.ok ? 'ready' : 'degraded'
      return reply.status(ok ? 200 : 503).send({ status, checks: { postgres, migrations, redis: redisCheck } })
    },
  )
}
