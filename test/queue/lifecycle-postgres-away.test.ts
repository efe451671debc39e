/**
 * The lifecycle worker's counterpart of worker-postgres-away: an acknowledgement deadline that
 * comes while the lifecycle worker cannot reach Postgres escalates within about a second of
 * Postgres returning, and its job uses none of its attempts on the outage. With BullMQ's doubling
 * backoff alone (0.5, 1, 2, 4, 8 … s) a deadline that met an outage of 9 s was next tried 7.5 s
 * after Postgres was back: a CRU offer nobody took escalated to police that much later.
 */
import t from 'tap'
import { ackDeadlineJobId, createLifecycleQueue } from '../../src/queue/lifecycle.js'
import { createLifecycleWorker, DEADLINE_ACTOR } from '../../src/workers/lifecycle-worker.js'
import { offerNow } from '../../src/workers/responder-worker.js'
import { UNAVAILABLE_RETRY_MS } from '../../src/workers/unavailable.js'
import { callEvent } from '../helpers/events.js'
import { workersAwayFromPostgres } from '../helpers/tcp-proxy.js'
import { createWorld, eventually, quietLog, running, say } from '../helpers/world.js'

const OFFERS = 4
const DEADLINE_S = 2
/**
 * Postgres returns this long after the deadlines came: between the doubling backoff's fifth try
 * (7.5 s after the first) and its sixth (15.5 s), where a job under the backoff alone waits longest.
 */
const BACK_AFTER_DEADLINE_MS = 9_000
/** Escalated this soon after Postgres returns: above the retry's second, far below the 7.5 s the doubling backoff took. */
const ESCALATED_WITHIN_MS = 4_000

const world = await createWorld(t)
const { db, prefix, config } = world
// The lifecycle worker reaches Postgres through the proxy; ingest and the offers directly.
const { proxy, workerDb, producer, connection } = await workersAwayFromPostgres(t, { databaseUrl: world.databaseUrl, redisUrl: config.REDIS_URL })
const queue = createLifecycleQueue(producer, prefix)
// The sweep far away: what escalates here is the deadline job.
const lifecycle = await running(createLifecycleWorker({ db: workerDb, connection, prefix, queue, ackDeadlines: { cru: DEADLINE_S }, sweepEveryMs: 600_000, log: quietLog }))
t.teardown(async () => {
  await lifecycle.close()
  await queue.close()
})

t.test(`Postgres away from the lifecycle worker until ${BACK_AFTER_DEADLINE_MS / 1000} s after the deadlines: every deadline applied within ${ESCALATED_WITHIN_MS} ms of its return, no attempt used`, async (t) => {
  await lifecycle.worker.waitUntilReady()
  const ids: string[] = []
  for (let i = 0; i < OFFERS; i++) {
    const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP', agency: 'away-pd' }) })
    t.equal(res.statusCode, 201)
    const a = res.json().decision.assignments[0] as { id: string; queue: string }
    t.equal(a.queue, 'cru')
    // As the responder worker offers it: offered, with its deadline job on the lifecycle queue.
    t.equal(await offerNow(db, a.id, 'cru', { lifecycle: queue, ackDeadlines: { cru: DEADLINE_S } }), 'offered')
    ids.push(a.id)
  }
  const { last } = await db.selectFrom('assignments').select((e) => e.fn.max('ack_deadline_at').as('last')).where('id', 'in', ids).executeTakeFirstOrThrow()
  await proxy.cut()
  const cutAt = Date.now()
  t.ok(last!.getTime() > cutAt, 'cut off before the deadlines came')
  // Every deadline has come and met the cut-off Postgres at least twice.
  const jobs = async () => Promise.all(ids.map(async (id) => (await queue.getJob(ackDeadlineJobId(id)))!))
  await eventually(async () => (await jobs()).every((j) => j.attemptsStarted >= 2), 15_000)
  // The outage lasts its time (what is measured is how soon after its end the deadlines apply).
  await new Promise((r) => setTimeout(r, Math.max(0, last!.getTime() + BACK_AFTER_DEADLINE_MS - Date.now())))
  const whileAway = await jobs()
  t.same(
    whileAway.filter((j) => j.attemptsMade > 0 || j.failedReason).map((j) => `${j.id}: ${j.attemptsMade} attempts made`),
    [],
    'while away: each job tried again and again, with no attempt used',
  )
  const escalatedWhileAway = await db.selectFrom('assignments').select('id').where('id', 'in', ids).where('status', '=', 'escalated').execute()
  t.equal(escalatedWhileAway.length, 0, 'nothing escalated while the worker could not reach Postgres')

  await proxy.restore()
  const backAt = Date.now()
  await eventually(async () => {
    const open = await db.selectFrom('assignments').select('id').where('id', 'in', ids).where('status', '=', 'offered').execute()
    return open.length === 0
  }, 30_000)
  const ms = Date.now() - backAt
  say(`queue/lifecycle-postgres-away: ${OFFERS} deadlines applied ${ms} ms after Postgres returned (away ${backAt - cutAt} ms; retry every ${UNAVAILABLE_RETRY_MS} ms)`)
  t.ok(ms < ESCALATED_WITHIN_MS, `every deadline applied ${ms} ms after Postgres returned (within ${ESCALATED_WITHIN_MS} ms)`)
  const escalations = await db.selectFrom('assignment_transitions').select(['assignment_id', 'actor']).where('assignment_id', 'in', ids).where('to_status', '=', 'escalated').execute()
  t.same(escalations.map((e) => e.actor), ids.map(() => DEADLINE_ACTOR), 'each escalated once, by its deadline job (not the sweep)')
  await eventually(async () => (await jobs()).every((j) => j.finishedOn), 5_000)
  t.same(
    (await jobs()).filter((j) => j.attemptsMade !== 1 || j.failedReason || j.returnvalue !== 'escalated').map((j) => `${j.id}: ${j.attemptsMade} attempts, ${j.failedReason ?? j.returnvalue}`),
    [],
    'each job completed on its one attempt',
  )
})
