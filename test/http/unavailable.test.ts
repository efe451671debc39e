import t from 'tap'
import { freePort } from '../helpers/redis-server.js'
import { Redis } from 'ioredis'
import pino from 'pino'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { compileRuleSet, loadDefaultRuleSet } from '../../src/routing/index.js'
import { callEvent } from '../helpers/events.js'
import { staticRuleSetRegistry } from '../../src/rule-sets/registry.js'

t.test('Postgres unreachable: ingest answers 503 with Retry-After, never 500; readiness says why', async (t) => {
  const port = await freePort()
  const config = loadConfig({ DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`, RETRY_AFTER_SECONDS: '7' })
  const db = createDb(createPool({ connectionString: config.DATABASE_URL, max: 2, statementTimeoutMs: 1000 }))
  const redis = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
  redis.on('error', () => {})
  const compiled = compileRuleSet(loadDefaultRuleSet())
  const app = await buildApp({ config, db, redis, ruleSets: staticRuleSetRegistry(compiled), logger: pino({ level: 'silent' }) })
  t.teardown(async () => {
    await app.close()
    await db.destroy()
    redis.disconnect()
  })

  // The key cannot even be checked without Postgres: that too is a 503, not a 401 or a 500.
  const auth = { authorization: `Bearer cadr_${'k'.repeat(43)}` }
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent(), headers: auth })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '7')
  t.equal(res.json().code, 'service-unavailable')
  t.notMatch(res.body, /ECONNREFUSED|127\.0\.0\.1/, 'no internals in the answer')

  const list = await app.inject({ method: 'GET', url: '/v1/assignments', headers: auth })
  t.equal(list.statusCode, 503)

  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.headers['retry-after'], '7')
  t.equal(ready.json().checks.postgres.ok, false)
  t.equal(ready.json().checks.redis.ok, false)
  t.equal(ready.json().status, 'not_ready')

  const alive = await app.inject({ method: 'GET', url: '/healthz' })
  t.equal(alive.statusCode, 200, 'liveness does not depend on the backing services')
})
