import t from 'tap'
import { buildApp } from '../../src/app.js'
import { createRedis } from '../../src/queue/redis.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, eventually, quietLog } from '../helpers/world.js'

const world = await createWorld(t, { env: { RATE_LIMIT_PER_MINUTE: '5' } })

t.test('per-key rate limit: 429 with Retry-After, other keys unaffected, health stays open', async (t) => {
  const a = { authorization: `Bearer ${await world.key('console')}` }
  const b = { authorization: `Bearer ${await world.key('console')}` }
  const codes: number[] = []
  for (let i = 0; i < 7; i++) codes.push((await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: a })).statusCode)
  t.same(codes, [200, 200, 200, 200, 200, 429, 429])
  const limited = await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: a })
  t.equal(limited.json().code, 'rate-limited')
  t.equal(limited.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.equal((await world.app.inject({ method: 'GET', url: '/v1/assignments', headers: b })).statusCode, 200)
  for (let i = 0; i < 8; i++) t.equal((await world.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
})

t.test('on the API connection as main.ts makes it (auto-pipelined): exact counts under concurrency, and after Redis forgets its scripts', async (t) => {
  // A Redis of this test's own: it flushes the script cache, which others' tests must not see.
  const server = await startRedisServer(t)
  const probe = createRedis(server.url, 'probe')
  t.teardown(() => probe.quit().catch(() => probe.disconnect()))
  t.equal(probe.options.enableAutoPipelining, true)
  const app = await buildApp({ config: world.config, db: world.db, redis: probe, ruleSets: world.ruleSets, logger: quietLog })
  t.teardown(() => app.close())
  await eventually(async () => probe.status === 'ready')

  const get = (key: string) => app.inject({ method: 'GET', url: '/v1/assignments', headers: { authorization: `Bearer ${key}` } })
  const a = await world.key('console')
  const codes = (await Promise.all(Array.from({ length: 12 }, () => get(a)))).map((r) => r.statusCode)
  t.same(codes.filter((c) => c === 200).length, 5, 'twelve at once: five pass')
  t.same(codes.filter((c) => c === 429).length, 7, 'seven limited')

  // The limiter's Lua script is gone (as after a Redis restart): ioredis sends it again; the limit
  // must still count, not fail open (the limiter lets requests through on errors).
  await probe.call('script', 'flush')
  const b = await world.key('console')
  const after: number[] = []
  for (let i = 0; i < 7; i++) after.push((await get(b)).statusCode)
  t.same(after, [200, 200, 200, 200, 200, 429, 429])
})
