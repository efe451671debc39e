import t from 'tap'
import { Redis } from 'ioredis'
import { createOutboxRelay, type OutboxRelay } from '../../src/queue/outbox-relay.js'
import { createQueues, type AssignmentQueue } from '../../src/queue/queues.js'
import { closeRedis, createRedis } from '../../src/queue/redis.js'
import type { QueueName } from '../../src/routing/index.js'
import { createResponderWorkers } from '../../src/workers/responder-worker.js'
import { callEvent } from '../helpers/events.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, eventually, quietLog, recordingLog, say } from '../helpers/world.js'
import { closeQueues, deliveryReport, inspectQueues } from './fixtures/delivery.js'

const POSTED = 30

// First, so that its teardown (kill the server) runs last, after everything that talks to it.
const server = await startRedisServer(t)
const world = await createWorld(t, { redisUrl: server.url })
const { app, db, prefix, databaseUrl } = world

/** The relay's log lines, parsed, to see it fail and recover. */
const { log, lines: relayLog } = recordingLog<{ msg: string; level: number; relay: string; failures?: number; side?: string }>()
const failuresLogged = (relay: string) => relayLog.filter((l) => l.relay === relay && l.msg.startsWith('outbox relay could not send')).length

const producers: Redis[] = []
const relays: OutboxRelay[] = []
const producerQueues: Record<QueueName, AssignmentQueue>[] = []
function newRelay(name: string): OutboxRelay {
  const producer = createRedis(server.url, 'producer', log.child({ relay: name }))
  const queues = createQueues(producer, prefix)
  producers.push(producer)
  producerQueues.push(queues)
  const relay = createOutboxRelay({ db, databaseUrl, queues, producer, log: log.child({ relay: name }), pollMs: 60_000, batchSize: 10 })
  relays.push(relay)
  return relay
}
const workerConnection = createRedis(server.url, 'worker')
const workers = createResponderWorkers({ db, connection: workerConnection, prefix, concurrency: 4, log: quietLog })
const inspector = new Redis(server.url, { maxRetriesPerRequest: 1 })
inspector.on('error', () => {})
const inspect = inspectQueues(inspector, prefix)

/** A close that may meet a dead Redis must not hang the teardown. */
const bounded = (p: Promise<unknown>, ms = 5_000) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`not done within ${ms} ms`)), ms).unref())])

t.teardown(async () => {
  const steps: [string, () => Promise<unknown>][] = [
    ['relays', () => Promise.all(relays.map((r) => r.stop()))],
    ['workers', () => workers.close()],
    ['queues', () => Promise.all([...producerQueues, inspect].map(closeQueues))],
  ]
  // Never throws: a failing teardown would skip the world's and the server's.
  for (const [name, step] of steps) await bounded(step()).catch((err: Error) => console.error(`teardown ${name}: ${err.message}`))
  for (const r of [...producers, workerConnection, inspector]) r.disconnect()
})

const readyz = () => app.inject({ method: 'GET', url: '/readyz' })

t.test('before the outage: ready, relay and workers connected', async (t) => {
  const res = await readyz()
  t.equal(res.statusCode, 200)
  const relay = newRelay('A')
  await relay.start()
  await Promise.all(Object.values(producerQueues[0]!).map((q) => q.waitUntilReady()))
  workers.start()
  await Promise.all(workers.workers.map((w) => w.waitUntilReady()))
})

const eventIds: string[] = []

t.test('while Redis is down: every call is stored, nothing is sent, the relay keeps trying', async (t) => {
  await server.kill()

  // Still in service: a load balancer that took every instance out for Redis would refuse the calls.
  const degraded = await eventually(async () => {
    const res = await readyz()
    return res.json().status === 'degraded' && res
  }, 5_000)
  t.equal(degraded.statusCode, 200, 'ready for traffic without Redis')
  t.equal(degraded.json().checks.redis.ok, false)
  t.equal(degraded.json().checks.postgres.ok, true)

  // A shutdown now: each kind of connection closes without an error, and stops reconnecting.
  await Promise.all(
    (['probe', 'producer', 'worker'] as const).map(async (kind) => {
      const c = createRedis(server.url, kind)
      await eventually(async () => c.status === 'reconnecting', 5_000)
      let attempts = 0
      c.on('connecting', () => attempts++)
      await t.resolves(closeRedis(c), `a ${kind} connection closes while Redis is down`)
      // Reconnect attempts come at most a second apart (createRedis).
      await new Promise((r) => setTimeout(r, 1500))
      t.equal(attempts, 0, `and tries no more (${kind})`)
    }),
  )

  const failuresBefore = failuresLogged('A')
  for (let i = 0; i < POSTED; i++) {
    const ev =
      i % 3 === 0
        ? callEvent({ natureCode: 'EDP', flags: { weapons: true } })
        : i % 3 === 1
          ? callEvent({ natureCode: 'STABBING', flags: { weapons: true, injury: true } })
          : callEvent({ natureCode: 'NOISE' })
    const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })
    t.equal(res.statusCode, 201, `event ${i} accepted while Redis is down`)
    eventIds.push(ev.eventId)
  }
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', 'in', eventIds).execute()
  t.equal(stored.length, POSTED, 'every event is stored')

  // The relay has tried again since the last commit woke it: not on a NOTIFY, on its own backoff.
  // Its backoff is at most 5 s; 20 s leaves a loaded machine room and still tells it from the 60 s poll.
  const failuresAfterPosts = failuresLogged('A')
  await eventually(async () => failuresLogged('A') > failuresAfterPosts, 20_000)
  t.ok(failuresLogged('A') > failuresBefore, `relay A logged ${failuresLogged('A') - failuresBefore} failed attempts`)
  const report = await db
    .selectFrom('outbox')
    .select((e) => [e.fn.countAll<string>().as('rows'), e.fn.count<string>('sent_at').as('sent'), e.fn.max('attempts').as('maxAttempts')])
    .executeTakeFirstOrThrow()
  t.ok(Number(report.rows) >= POSTED, `${report.rows} outbox rows`)
  t.equal(Number(report.sent), 0, 'no outbox row is marked sent while Redis is down')
  t.equal(Number(report.maxAttempts), 0, 'no attempt counted as a send')
  const queued = await db.selectFrom('assignments').select('status').where('status', '!=', 'queued').execute()
  t.same(queued, [], 'every assignment is still queued')
  t.equal((await readyz()).json().status, 'degraded', 'still degraded, still in service')
  const unreachable = relayLog.filter((l) => l.relay === 'A' && l.msg.startsWith('Redis unreachable'))
  t.equal(unreachable.length, 1, 'the connection says once that Redis is away, however many reconnects fail')
  t.match(unreachable[0], { level: 40, redis: `127.0.0.1:${server.port}`, connection: 'producer' }, 'and where it was')
})

/** Unsent outbox rows that some transaction holds locked right now (a relay in the middle of a batch). */
async function lockedRows(): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const unsent = await trx.selectFrom('outbox').select('id').where('sent_at', 'is', null).execute()
    const free = await trx.selectFrom('outbox').select('id').where('sent_at', 'is', null).forUpdate().skipLocked().execute()
    return unsent.length - free.length
  })
}

t.test('a relay started during the outage fails fast too, holds no rows and stops', async (t) => {
  // The bounds tell a relay that does not wait for Redis from one that does (Redis stays away for
  // the whole test: it would never end), not a fast start from a slow one: the start opens a LISTEN
  // connection, the stop closes it, which on a loaded machine can take more than the 2 s once used.
  const b = newRelay('B')
  // Sampled all through B's first attempt, its wait for Redis included: read once after the failure,
  // the attempt has rolled back, and a relay that held rows while it waited would read 0 too.
  let mostLocked = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      mostLocked = Math.max(mostLocked, await lockedRows())
      await new Promise((r) => setTimeout(r, 25))
    }
  })()
  let failed = false
  try {
    await bounded(b.start(), 10_000)
    failed = await eventually(async () => failuresLogged('B') > 0, 10_000).then(
      () => true,
      () => false,
    )
  } finally {
    sampling = false
    await sampler
  }
  t.ok(failed, 'relay B logs a failed attempt within 10 s, as relay A does')
  t.equal(mostLocked, 0, `no outbox row was held locked while a relay waited for Redis (at most ${mostLocked} were)`)
  const stopped = await bounded(b.stop(), 10_000).then(
    () => true,
    () => false,
  )
  t.ok(stopped, 'relay B stops within 10 s while Redis is down')
})

// Backing off from Postgres, a commit brings the relay's next try forward (relay.test.ts): Postgres
// answers again. It says nothing of Redis, and must not make the relay hammer a Redis that is away.
t.test('a commit does not cut short a backoff from Redis', async (t) => {
  const failedLines = () => relayLog.filter((l) => l.relay === 'A' && l.msg.startsWith('outbox relay could not send'))
  // A failure at the backoff's ceiling: relay A waits 5 s from it.
  const before = failedLines().length
  await eventually(async () => failedLines().length > before && (failedLines().at(-1)?.failures ?? 0) >= 6, 20_000)
  const last = failedLines().at(-1)!
  t.equal(last.side, 'redis', 'the failure is told as Redis’s')
  const attempts = failedLines().length
  const ev = callEvent({ natureCode: 'EDP' })
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })).statusCode, 201)
  eventIds.push(ev.eventId)
  await new Promise((r) => setTimeout(r, 1500))
  t.equal(failedLines().length, attempts, 'no try in the 1.5 s after the commit: the backoff runs its course')
})

t.test('when Redis is back: every assignment is delivered exactly once', async (t) => {
  await server.start()
  const backAt = Date.now()

  await eventually(async () => {
    const unsent = await db.selectFrom('outbox').select('id').where('sent_at', 'is', null).execute()
    const queued = await db.selectFrom('assignments').select('id').where('status', '=', 'queued').execute()
    return unsent.length === 0 && queued.length === 0
  }, 30_000)
  t.pass(`every outbox row sent and every assignment offered ${Date.now() - backAt} ms after Redis came back`)
  t.equal(relayLog.filter((l) => l.relay === 'A' && l.msg === 'Redis connection back').length, 1, 'and says once that it is back')

  // Degraded answers 200 too, and the probe's connection comes back on its own backoff (at most
  // 1 s), perhaps after the relay's: wait for 'ready' itself.
  const ready = await eventually(async () => {
    const res = await readyz()
    return res.json().status === 'ready' && res
  }, 5_000)
  t.equal(ready.statusCode, 200, 'readyz is ready again once the probe reconnects')
  // Relay A retries on its backoff (at most 5 s), and says so.
  await eventually(async () => relayLog.some((l) => l.relay === 'A' && l.msg === 'outbox relay recovered'), 7_000)
  t.pass('relay A says it recovered')

  const r = await deliveryReport(db, inspect, inspector)
  const transitions = await db.selectFrom('assignment_transitions').select(['assignment_id', 'from_status', 'to_status']).execute()
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', 'in', eventIds).execute()
  t.equal(r.unsent, 0, 'every outbox row is sent')
  t.equal(r.attemptsNotOne, 0, 'each row sent by exactly one successful attempt')
  t.same(r.missing, [], 'every assignment has its job on its queue')
  t.same(r.stray, [], 'no job without an assignment')
  t.equal(r.jobs, r.assignments, 'one job per assignment')
  t.same(r.addedTwice, [], 'no job added twice')
  t.equal(r.duplicateAdds, 0, 'no job id re-sent')
  t.same(r.notOffered, [], 'every assignment offered')
  t.same(r.offeredNotOnce, [], 'each assignment offered once')
  t.equal(transitions.length, 2 * r.assignments, 'two transitions per assignment (queued, offered): no duplicates')

  // Per call (what the CAD posted) and per assignment (what the responders get).
  const byCall = await db
    .selectFrom('assignments')
    .innerJoin('call_events', 'call_events.call_id', 'assignments.call_id')
    .select(['assignments.id', 'assignments.call_id'])
    .where('call_events.event_id', 'in', eventIds)
    .execute()
  const bad = new Set([...r.missing, ...r.notOffered, ...r.offeredNotOnce].map((s) => s.split(' ')[0]))
  const calls = new Map<string, boolean>()
  for (const a of byCall) calls.set(a.call_id, (calls.get(a.call_id) ?? true) && !bad.has(a.id))
  const callsDelivered = [...calls.values()].filter(Boolean).length
  const duplicated = r.duplicateAdds + r.addedTwice.length + r.offeredNotOnce.filter((s) => !s.endsWith('(0)')).length
  const lost = r.missing.length + r.unsent + (eventIds.length - calls.size)
  const delivered = r.assignments - new Set([...r.missing, ...r.notOffered].map((s) => s.split(' ')[0])).size
  const line = `posted ${eventIds.length} / stored ${stored.length} / delivered ${callsDelivered} / duplicated ${duplicated} / lost ${lost}`
  say(line)
  say(`assignments ${r.assignments}: delivered ${delivered}, each exactly once`)
  console.log(line)
  t.equal(stored.length, eventIds.length, 'every posted call stored')
  t.equal(callsDelivered, eventIds.length, 'every posted call delivered')
  t.equal(delivered, r.assignments, `all ${r.assignments} assignments of the ${eventIds.length} calls delivered`)
  t.equal(duplicated, 0, 'duplicated 0')
  t.equal(lost, 0, 'lost 0')
})
