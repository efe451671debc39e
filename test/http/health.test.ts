import { performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { Redis } from 'ioredis'
import t from 'tap'
import { freePort } from '../helpers/redis-server.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { healthRoutes } from '../../src/http/health.js'
import { createRedisBreaker, type RedisBreaker } from '../../src/queue/redis-breaker.js'
import { proxyPostgres } from '../helpers/tcp-proxy.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)

t.test('readiness: Postgres, migrations and Redis all checked', async (t) => {
  const res = await world.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ready', checks: { postgres: { ok: true }, migrations: { ok: true }, redis: { ok: true } } })
})

t.test('a sane x-request-id is kept, answered and logged; anything else is replaced', async (t) => {
  const kept = await world.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'cad-7781.a' } })
  t.equal(kept.headers['x-request-id'], 'cad-7781.a')
  t.ok(world.logs.some((l) => l.includes('"reqId":"cad-7781.a"')), 'the request id is on the log lines')
  const replaced = await world.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id\twith spaces' } })
  t.match(replaced.headers['x-request-id'], /^[0-9a-f-]{36}$/)
})

t.test('Swagger UI and the JSON document are served', async (t) => {
  const doc = await world.app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(doc.statusCode, 200)
  t.equal(doc.json().openapi, '3.1.0')
  const ui = await world.app.inject({ method: 'GET', url: '/docs/' })
  t.equal(ui.statusCode, 200)
})

t.test('readiness: without Redis, even from the start, the instance stays in service as degraded', async (t) => {
  // Every instance restarted during a Redis outage must still take calls; a deploy gate reads checks.redis.
  const unreachable = await createWorld(t, { redisUrl: 'redis://127.0.0.1:1' })
  const res = await unreachable.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { status: 'degraded', checks: { postgres: { ok: true }, migrations: { ok: true }, redis: { ok: false } } })
})

t.test('readiness names the failed dependency in fixed words; the driver\'s message, with its user and host names, is in the log only', async (t) => {
  // A role that does not exist: Postgres's refusal names it, as a failed password names its user.
  const url = new URL(world.databaseUrl)
  url.username = 'readyz_nobody'
  const pool = createPool({ connectionString: url.toString(), max: 2, statementTimeoutMs: 1000 })
  const db = createDb(pool)
  const redis = new Redis(`redis://127.0.0.1:${await freePort()}`, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
  redis.on('error', () => {})
  const logs: string[] = []
  const log = { warn: (obj: object, msg: string) => logs.push(`${msg} ${JSON.stringify(obj)}`), info: () => {} }
  const breaker = createRedisBreaker({ redis, timeoutMs: 500, openMs: 60_000, log })
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => logs.push(line) } } })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  await app.register(healthRoutes, { db, redis, breaker, retryAfterSeconds: 5 })
  t.teardown(async () => {
    breaker.stop()
    await app.close()
    await db.destroy()
    redis.disconnect()
  })

  // The first poll meets Redis's error itself; the second finds the breaker it opened.
  for (const poll of ['first', 'second']) {
    const res = await app.inject({ method: 'GET', url: '/readyz' })
    t.equal(res.statusCode, 503, `${poll} poll: 503`)
    t.same(
      res.json(),
      {
        status: 'not_ready',
        checks: {
          postgres: { ok: false, detail: 'Postgres did not answer or refused the connection; the log says why' },
          migrations: { ok: false, detail: 'the applied migrations could not be read from Postgres; the log says why' },
          redis: { ok: false, detail: poll === 'first' ? 'Redis did not answer; the log says why' : 'Redis is not answering, and is not asked until a probe gets an answer' },
        },
      },
      `${poll} poll: fixed words`,
    )
    t.notMatch(res.body, /readyz_nobody|127\.0\.0\.1|enableOfflineQueue/, `${poll} poll: no driver message`)
  }
  const logged = logs.join('')
  t.match(logged, /role \\?"readyz_nobody\\?" does not exist/, 'the log has Postgres\'s own message')
  t.match(logged, /enableOfflineQueue/, 'and Redis\'s')
  // Load balancers poll every few seconds through an outage.
  const warned = logs.filter((l) => l.includes('readiness check failed') && l.includes('"check":"postgres"'))
  t.equal(warned.length, 1, 'the same failure at both polls: one warning, the second at debug')
  t.match(JSON.parse(warned[0] ?? '{}'), { reqId: /./ }, 'the line names the poll that met it (the request id)')
})

t.test('readiness polls while Postgres is silent: each answers within its 2 s, and they share one set of queries rather than each hold pooled connections', async (t) => {
  const { proxy, url } = await proxyPostgres(t, world.databaseUrl)
  const pool = createPool({ connectionString: url, max: 20, statementTimeoutMs: 1000, queryTimeoutMs: 6000 })
  const db = createDb(pool)
  const app = Fastify()
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  // Redis is not this test's: an open breaker answers its check without asking it.
  const breaker = { closed: false } as unknown as RedisBreaker
  await app.register(healthRoutes, { db, redis: world.redis, breaker, retryAfterSeconds: 5 })
  t.teardown(async () => {
    await app.close()
    await db.destroy()
  })
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'ready before the freeze')

  proxy.freeze()
  // A load balancer, or three, polling: eight polls 300 ms apart, each answered before the last is sent.
  const answers = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      await new Promise((r) => setTimeout(r, i * 300))
      const started = performance.now()
      const res = await app.inject({ method: 'GET', url: '/readyz' })
      return { status: res.statusCode, ms: Math.round(performance.now() - started) }
    }),
  )
  const held = pool.totalCount
  // A poll gives up at 2 s. Without that it would wait for the query bound of the shared check,
  // 6 s after the first poll sent it: 6 s for the first poll, 3.9 s for the last (sent 2.1 s in).
  // 3 s still tells the two apart, and leaves a loaded machine's late timers 1 s (was 2.5 s).
  t.same(
    answers.filter((a) => a.status !== 503 || a.ms >= 3000),
    [],
    `every poll 503 within 3 s (${answers.map((a) => a.ms).join(', ')} ms)`,
  )
  t.ok(held <= 2, `${held} pooled connections held by readiness (one per kind of check), not one per poll`)
  proxy.thaw({ strand: true })
})
