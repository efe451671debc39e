/**
 * Ingest needs only Postgres (README: "ingest needs only Postgres, so a load balancer keeps the
 * instance during a Redis outage"). A Redis that is down refuses at once; a Redis that hangs — its
 * process stopped, a network that drops packets, a stall behind a slow disk — answers nothing and
 * refuses nothing. Its commands must still end, or every CAD post waits on the limiter for as long as
 * Redis hangs; and once one has waited out the command time-out, the next ones must not wait at all
 * (the breaker, src/queue/redis-breaker.ts), while the rate limit still holds, counted per process.
 */
import { Writable } from 'node:stream'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { Redis } from 'ioredis'
import pino from 'pino'
import { buildApp } from '../../src/app.js'
import { createKey } from '../../src/auth/keys.js'
import { closeRedis, createRedis, PROBE_COMMAND_TIMEOUT_MS, whenReady } from '../../src/queue/redis.js'
import { callEvent } from '../helpers/events.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, eventually, quietLog, say } from '../helpers/world.js'

/** Requests a minute per key (and per address without one): small enough to pass in a test. */
const LIMIT = 60
/** How long requests skip Redis after it failed to answer, before a PING asks again. */
const OPEN_MS = 200
/** Posts measured while Redis hangs; the admin key's posts stay under LIMIT. */
const POSTS = 30
/**
 * Each of them must be answered within the command time-out it would otherwise wait out: a post
 * that waited for it takes at least that long, one that did not is held up only by the machine
 * (median 10-50 ms here; a loaded CI machine has stretched single posts to hundreds of ms). Kept a
 * tenth under the time-out, which a timer may fire a millisecond early on (was half of it).
 */
const BOUND_MS = PROBE_COMMAND_TIMEOUT_MS * 0.9

// First, so that its teardown (kill the server) runs last, after everything that talks to it.
const server = await startRedisServer(t)
const world = await createWorld(t, { redisUrl: server.url, env: { RATE_LIMIT_PER_MINUTE: String(LIMIT), REDIS_BREAKER_OPEN_MS: String(OPEN_MS) } })
const { db, config, ruleSets, prefix } = world

/** The app's log lines, parsed: the breaker says once that it opened and once that it closed. */
const lines: { level: number; msg: string }[] = []
const raw: string[] = []
const log = pino(
  { level: 'info' },
  new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) {
        if (!line) continue
        raw.push(line)
        lines.push(JSON.parse(line) as (typeof lines)[number])
      }
      cb()
    },
  }),
)

// The API's Redis connection exactly as main.ts makes it.
const probe = createRedis(server.url, 'probe')
t.teardown(() => closeRedis(probe))
await whenReady(probe, 10_000)
const app = await buildApp({ config, db, redis: probe, ruleSets, logger: log })
t.teardown(() => app.close())
// Reads the limiter's counters once Redis answers again (never while it hangs: it would wait too).
const inspector = new Redis(server.url, { maxRetriesPerRequest: 1 })
inspector.on('error', () => {})
t.teardown(() => inspector.disconnect())
// Paused in the first test, resumed in the last: whatever fails between, resumed before the
// teardowns that talk to it, which run after this one (SIGCONT to a running process does nothing).
t.teardown(() => server.resume())

const admin = { authorization: `Bearer ${world.adminKey}` }
const post = (body: unknown) => app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object, headers: admin })

/** The answer, or 'no answer' when none came within `ms` (far beyond any time-out the service sets). */
const within = <T>(p: Promise<T>, ms: number) => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<'no answer'>((r) => (timer = setTimeout(() => r('no answer'), ms)))]).finally(() => clearTimeout(timer))
}

/** One value of the Prometheus text (an admin scrape), undefined when absent. */
async function metric(name: string): Promise<number | undefined> {
  const res = await app.inject({ method: 'GET', url: '/metrics', headers: admin })
  const line = res.body.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

const opened = () => lines.filter((l) => l.msg.startsWith('Redis not answering'))
const closed = () => lines.filter((l) => l.msg.startsWith('Redis answering again'))

t.test('a Redis that hangs does not hold up ingest: the event is stored and answered 201', async (t) => {
  const before = callEvent()
  t.equal((await post(before)).statusCode, 201, 'with Redis answering')
  t.equal(await metric('cad_router_redis_breaker_open'), 0, 'the breaker is closed')

  server.pause()
  const event = callEvent()
  const res = await within(post(event), 30_000)
  t.not(res, 'no answer', 'answered while Redis hangs')
  if (res !== 'no answer') t.equal(res.statusCode, 201, res.body)
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', '=', event.eventId).executeTakeFirst()
  t.ok(stored, 'the event is stored')
  t.equal(opened().length, 1, 'the breaker says it opened')
})

t.test('once a command has timed out, CAD posts no longer wait on Redis: each is answered quickly and stored', async (t) => {
  const durations: number[] = []
  const ids: string[] = []
  for (let i = 0; i < POSTS; i++) {
    const event = callEvent()
    const start = performance.now()
    const res = await post(event)
    durations.push(performance.now() - start)
    ids.push(event.eventId)
    t.equal(res.statusCode, 201, `post ${i}`)
    // Counted by this process meanwhile: the limit stays visible to the client.
    if (i === 0) t.equal(res.headers['x-ratelimit-limit'], String(LIMIT), 'the limit still applies')
  }
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', 'in', ids).execute()
  t.equal(stored.length, POSTS, 'every event is stored')
  const sorted = [...durations].sort((a, b) => a - b)
  const slowest = sorted[sorted.length - 1]!
  say(`Redis hung: ${POSTS} sequential posts after the breaker opened took median ${sorted[Math.floor(POSTS / 2)]!.toFixed(1)} ms, slowest ${slowest.toFixed(1)} ms (command time-out ${PROBE_COMMAND_TIMEOUT_MS} ms)`)
  t.ok(slowest < BOUND_MS, `every post answered within ${BOUND_MS} ms (slowest ${slowest.toFixed(1)} ms)`)

  // Readiness answers at once too, and says Redis is away; the instance stays in service.
  const start = performance.now()
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  const readyMs = performance.now() - start
  t.equal(ready.statusCode, 200)
  t.equal(ready.json().status, 'degraded')
  t.equal(ready.json().checks.redis.ok, false)
  t.ok(readyMs < BOUND_MS, `readiness answered in ${readyMs.toFixed(1)} ms`)

  // The queue admin's connection waits for Redis without a time-out (an action may take long):
  // while the breaker is open it is not asked at all.
  const jobs = await within(app.inject({ method: 'GET', url: '/v1/admin/failed-jobs', headers: admin }), 5_000)
  t.not(jobs, 'no answer', 'the failed-jobs listing answers while Redis hangs')
  if (jobs !== 'no answer') {
    t.equal(jobs.statusCode, 503, jobs.body)
    t.ok(jobs.headers['retry-after'], 'with Retry-After')
  }
  t.equal(await metric('cad_router_redis_breaker_open'), 1, 'the metric says the breaker is open')
})

let floodKey = ''
let floodKeyId = ''

t.test('the limit still holds while Redis hangs: a key, or an address without one, over it gets 429', async (t) => {
  const made = await createKey(db, { name: 'flooding-console', role: 'console', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })
  floodKey = made.key
  floodKeyId = made.view.id
  const headers = { authorization: `Bearer ${floodKey}` }
  const codes: number[] = []
  for (let i = 0; i < LIMIT + 2; i++) codes.push((await app.inject({ method: 'GET', url: '/v1/assignments', headers })).statusCode)
  t.same(codes.slice(0, LIMIT), Array(LIMIT).fill(200), `the first ${LIMIT} pass`)
  t.same(codes.slice(LIMIT), [429, 429], 'the rest are refused')
  const limited = await app.inject({ method: 'GET', url: '/v1/assignments', headers })
  t.equal(limited.json().code, 'rate-limited')
  t.ok(Number(limited.headers['retry-after']) > 0, 'with Retry-After')
  // Another key is not held up by it, and the CAD's posts go on.
  t.equal((await post(callEvent())).statusCode, 201, 'a CAD post still passes')

  // Unauthenticated requests reach the limiter only on the dashboard's static files; counted per address.
  const anonymous: number[] = []
  for (let i = 0; i < LIMIT + 1; i++) anonymous.push((await app.inject({ method: 'GET', url: '/dashboard/' })).statusCode)
  t.same(anonymous.slice(0, LIMIT), Array(LIMIT).fill(200), 'an address without a key: the first pass')
  t.equal(anonymous[LIMIT], 429, 'then it is refused')
})

t.test('when Redis answers again, the breaker closes and the limiter counts in Redis, shared by every instance', async (t) => {
  server.resume()
  await eventually(async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().status === 'ready', 10_000)
  t.equal(await metric('cad_router_redis_breaker_open'), 0, 'the metric says the breaker is closed')
  t.equal(await metric('cad_router_redis_breaker_openings_total'), 1, 'and that it opened once')

  // The flooding key's requests were counted by this process only: back on Redis's count, it starts afresh.
  const headers = { authorization: `Bearer ${floodKey}` }
  const again = await app.inject({ method: 'GET', url: '/v1/assignments', headers })
  t.equal(again.statusCode, 200, 'Redis, not the fallback, counts it now')
  t.equal(again.headers['x-ratelimit-remaining'], String(LIMIT - 1))
  t.equal(await inspector.get(`${prefix}:rate:${floodKeyId}`), '1', 'its count is in Redis')

  // A second instance (its own connection, its own breaker) continues the same count.
  const otherConnection = createRedis(server.url, 'probe')
  t.teardown(() => closeRedis(otherConnection))
  await whenReady(otherConnection, 10_000)
  const other = await buildApp({ config, db, redis: otherConnection, ruleSets, logger: quietLog })
  t.teardown(() => other.close())
  const there = await other.inject({ method: 'GET', url: '/v1/assignments', headers })
  t.equal(there.statusCode, 200)
  t.equal(there.headers['x-ratelimit-remaining'], String(LIMIT - 2), 'the count is shared')
  t.equal(await inspector.get(`${prefix}:rate:${floodKeyId}`), '2')

  t.equal(opened().length, 1, 'the opening was logged once, however many probes failed')
  t.equal(closed().length, 1, 'the closing once')
  t.equal(opened()[0]!.level, 40, 'opening: a warning')
  t.equal(closed()[0]!.level, 30, 'closing: info')
  const breakerLines = raw.filter((l) => l.includes('Redis not answering') || l.includes('Redis answering again'))
  t.notOk(
    breakerLines.some((l) => l.includes(floodKeyId) || l.includes('127.0.0.1')),
    'no key or address in them',
  )
})
