import t from 'tap'
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
