/**
 * A responder worker whose Postgres is away (cut off, restarting, failing over) keeps its jobs and
 * offers them within about a second of Postgres returning, however long it was away: a job that
 * meets an unavailable Postgres tries again a second later and uses none of its attempts. With
 * BullMQ's doubling backoff alone (0.5, 1, 2, 4, 8 … s) a job that met an outage of 9 s next tried
 * at 15.5 s, more than 6 s after Postgres was back, and an outage of a few minutes failed it for good.
 */
import t from 'tap'
import { createOutboxRelay } from '../../src/queue/outbox-relay.js'
import { createQueues } from '../../src/queue/queues.js'
import { createResponderWorkers } from '../../src/workers/responder-worker.js'
import { UNAVAILABLE_RETRY_MS } from '../../src/workers/unavailable.js'
import { callEvent } from '../helpers/events.js'
import { workersAwayFromPostgres } from '../helpers/tcp-proxy.js'
import { createWorld, eventually, quietLog, say } from '../helpers/world.js'
import { closeQueues, inspectQueues } from './fixtures/delivery.js'

const POSTED = 12
const AWAY_MS = 9_000
/** Delivered this soon after Postgres returns: above the retry's second, far below the 6.5 s the doubling backoff took. */
const DELIVERED_WITHIN_MS = 4_000

const world = await createWorld(t)
const { db, prefix, config } = world
// The workers reach Postgres through the proxy; ingest and the relay directly.
const { proxy, workerDb, producer, connection } = await workersAwayFromPostgres(t, { databaseUrl: world.databaseUrl, redisUrl: config.REDIS_URL })
const queues = createQueues(producer, prefix)
const relay = createOutboxRelay({ db, queues, producer, databaseUrl: world.databaseUrl, log: quietLog, pollMs: 200, batchSize: 50 })
const workers = createResponderWorkers({ db: workerDb, connection, prefix, concurrency: 4, log: quietLog })
const inspect = inspectQueues(producer, prefix)
t.teardown(async () => {
  await relay.stop()
  await workers.close()
  await closeQueues(inspect)
  await closeQueues(queues)
})

t.test(`Postgres away ${AWAY_MS / 1000} s from the workers: every assignment offered within ${DELIVERED_WITHIN_MS} ms of its return, no attempt used`, async (t) => {
  await relay.start()
  workers.start()
  await Promise.all(workers.workers.map((w) => w.waitUntilReady()))
  await proxy.cut()
  const cutAt = Date.now()
  for (let i = 0; i < POSTED; i++) {
    const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: i % 2 ? 'EDP' : 'STABBING', flags: { weapons: true } }) })
    t.equal(res.statusCode, 201, 'stored: ingest does not go through the proxy')
  }
  const { rows } = await db.selectFrom('assignments').select(['id', 'queue']).execute().then((r) => ({ rows: r }))
  t.ok(rows.length >= POSTED, `${rows.length} assignments`)
  // Every job has reached a worker and met the cut-off Postgres at least once.
  await eventually(async () => {
    const { count } = await db.selectFrom('outbox').select((e) => e.fn.countAll<number>().as('count')).where('sent_at', 'is', null).executeTakeFirstOrThrow()
    return Number(count) === 0
  }, 10_000)
  await new Promise((r) => setTimeout(r, Math.max(0, AWAY_MS - (Date.now() - cutAt))))
  const offeredWhileAway = await db.selectFrom('assignments').select('id').where('status', '=', 'offered').execute()
  t.equal(offeredWhileAway.length, 0, 'nothing offered while the workers could not reach Postgres')

  await proxy.restore()
  const backAt = Date.now()
  await eventually(async () => {
    const open = await db.selectFrom('assignments').select('id').where('status', '=', 'queued').execute()
    return open.length === 0
  }, 30_000)
  const ms = Date.now() - backAt
  // Each delivered once: one queued → offered transition per assignment.
  const offers = await db.selectFrom('assignment_transitions').select(['assignment_id']).where('from_status', '=', 'queued').where('to_status', '=', 'offered').execute()
  const perAssignment = new Map<string, number>()
  for (const o of offers) perAssignment.set(o.assignment_id, (perAssignment.get(o.assignment_id) ?? 0) + 1)
  // The jobs used none of their attempts on the outage.
  const jobs = (await Promise.all(Object.values(inspect).map((q) => q.getJobs(['completed', 'failed', 'delayed', 'waiting', 'active'])))).flat()
  say(`queue/worker-postgres-away: ${rows.length} assignments offered ${ms} ms after Postgres returned (away ${Date.now() - cutAt - ms} ms; retry every ${UNAVAILABLE_RETRY_MS} ms)`)
  t.ok(ms < DELIVERED_WITHIN_MS, `every assignment offered ${ms} ms after Postgres returned (within ${DELIVERED_WITHIN_MS} ms)`)
  t.same([...perAssignment.values()].filter((n) => n !== 1), [], 'each offered once')
  t.equal(perAssignment.size, rows.length, 'every assignment offered')
  t.same(
    jobs.filter((j) => j.attemptsMade > 1 || j.failedReason),
    [],
    'no job used an attempt on the outage, none failed',
  )
})
