import t from 'tap'
import { Redis } from 'ioredis'
import { buildApp } from '../../src/app.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { LISTEN_APPLICATION_NAME } from '../../src/db/listener.js'
import { createRuleSetRegistry } from '../../src/rule-sets/registry.js'
import { callEvent } from '../helpers/events.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { feedData, openSse, type SseClient } from '../helpers/sse.js'
import { createWorld, quietLog } from '../helpers/world.js'

// Redis of this file's own, so it can be killed; registered first so it goes last.
const redisServer = await startRedisServer(t)
// The safety-net poll is off (10 min): what arrives here arrived through a wake-up.
const world = await createWorld(t, { env: { FEED_POLL_MS: '600000' }, redisUrl: redisServer.url })
const urlA = await world.app.listen({ port: 0, host: '127.0.0.1' })

/** A second API instance: its own pool and Redis connection, the same database and Redis. */
async function instance() {
  const pool = createPool({ connectionString: world.databaseUrl, max: 4, statementTimeoutMs: 10_000 })
  const db = createDb(pool)
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true })
  redis.on('error', () => {})
  await redis.connect().catch(() => {})
  const app = await buildApp({ config: world.config, db, redis, ruleSets: await createRuleSetRegistry(db), logger: quietLog })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await app.close()
    await db.destroy()
    redis.disconnect()
  }
  t.teardown(close)
  return { app, url, close }
}

const streams: SseClient[] = []
t.teardown(() => streams.forEach((s) => s.close()))
async function console_(url: string, key: string) {
  const s = await openSse(`${url}/v1/assignments/stream`, { authorization: `Bearer ${key}` })
  if (s.status !== 200) throw new Error(`stream answered ${s.status}`)
  streams.push(s)
  return s
}

async function post(url: string) {
  const res = await fetch(`${url}/v1/call-events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${world.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(callEvent({ agency: 'hastings-pd', natureCode: 'EDP' })),
  })
  if (res.status !== 201) throw new Error(`call event answered ${res.status}`)
  return ((await res.json()) as { decision: { assignments: { id: string }[] } }).decision.assignments.map((a) => a.id)
}

const ids = (s: SseClient) => s.events.map((e) => feedData(e).assignmentId)

const key = await world.key('console', { agencies: ['hastings-pd'] })
// A's console connects first: A's feed starts first and relays the wake-ups.
const onA = await console_(urlA, key)
const b = await instance()
const onB = await console_(b.url, key)

t.test('two API instances both deliver every change to their consoles', async (t) => {
  const first = await post(urlA)
  const second = await post(b.url)
  const all = [...first, ...second]
  await onA.waitFor(all.length, 3000)
  await onB.waitFor(all.length, 3000)
  t.same(ids(onA), all)
  t.same(ids(onB), all)
  t.same(
    onA.events.map((e) => e.id),
    onB.events.map((e) => e.id),
    'the same event ids on both, so a console may resume on either',
  )

  // A console moving an assignment on B is seen on A at once.
  const move = await fetch(`${b.url}/v1/assignments/${first[0]}/acknowledge`, { method: 'POST', headers: { authorization: `Bearer ${world.adminKey}` } })
  t.equal(move.status, 200)
  await onA.waitFor(all.length + 1, 3000)
  t.equal(feedData(onA.events[all.length]!).status, 'acknowledged')
})

t.test('resume on the other instance with the id from the first', async (t) => {
  const seen = onA.events.length
  const last = onA.events[seen - 1]!.id!
  const more = await post(urlA)
  await onA.waitFor(seen + more.length, 3000)
  const resumed = await openSse(`${b.url}/v1/assignments/stream`, { authorization: `Bearer ${key}`, 'last-event-id': last })
  streams.push(resumed)
  t.same((await resumed.waitFor(more.length, 3000)).map((e) => feedData(e).assignmentId), more)
})

t.test('the instance that relays wake-ups goes away: another takes over', async (t) => {
  const before = onB.events.length
  await world.app.close()
  const next = await post(b.url)
  // The bridge lock is retried every second; then the wake-up arrives (the poll is 10 minutes).
  await onB.waitFor(before + next.length, 5000)
  t.same(ids(onB).slice(before), next)
})

t.test("the bridge's LISTEN connection is lost: it listens again and the wake-ups resume", async (t) => {
  const killed = await world.pool.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = $2', [world.name, LISTEN_APPLICATION_NAME])
  t.equal(killed.rowCount, 1, "B's connection (A is gone)")
  const before = onB.events.length
  // Committed while nobody listens, most likely: the reconnect publishes a wake-up for them.
  const next = await post(b.url)
  await onB.waitFor(before + next.length, 5000)
  t.same(ids(onB).slice(before), next)
  const again = await post(b.url)
  await onB.waitFor(before + next.length + again.length, 3000)
  t.same(ids(onB).slice(before + next.length), again, 'and the ones after')
})

t.test('Redis down: wake-ups are lost, changes only delayed until it is back', async (t) => {
  const c = await instance()
  const onC = await console_(c.url, key)
  await redisServer.kill()
  const before = onC.events.length
  const beforeB = onB.events.length
  const during = await post(b.url)
  await redisServer.start()
  // The subscriber reads once it is subscribed again; the bridge's own instance never needed Redis.
  await onC.waitFor(before + during.length, 10_000)
  t.same(ids(onC).slice(before), during)
  await onB.waitFor(beforeB + during.length, 5000)
  t.same(ids(onB).slice(beforeB), during)
})
