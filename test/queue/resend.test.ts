import { Writable } from 'node:stream'
import t from 'tap'
import { UnrecoverableError, Worker, type Job } from 'bullmq'
import pino from 'pino'
import { createDb, createPool } from '../../src/db/connect.js'
import { createMetrics } from '../../src/metrics/metrics.js'
import { createLifecycleQueue } from '../../src/queue/lifecycle.js'
import { createOutboxRelay, type OutboxRelay } from '../../src/queue/outbox-relay.js'
import { createQueues, jobIdFor, resendJobIdFor, type AssignmentJob } from '../../src/queue/queues.js'
import { createRedis } from '../../src/queue/redis.js'
import { RESEND_ACTOR, resendLost, type Resent, type ResendOptions } from '../../src/queue/resend.js'
import { sweep } from '../../src/workers/lifecycle-worker.js'
import { createResponderWorkers, offerAssignment } from '../../src/workers/responder-worker.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, eventually, openTransaction, quietLog, REDIS_URL, say } from '../helpers/world.js'

// resendLost is called with its own clock here (`now`), so nothing waits for AFTER_MS to pass.
const AFTER_MS = 60_000

const world = await createWorld(t)
const { app, db, prefix, databaseUrl, config } = world
const producer = createRedis(REDIS_URL, 'producer')
const connection = createRedis(REDIS_URL, 'worker')
const queues = createQueues(producer, prefix)
const lifecycleQueue = createLifecycleQueue(connection, prefix)
// This relay only sends; the tests sweep themselves (the last one runs the relay's own sweep).
const relays: OutboxRelay[] = [createOutboxRelay({ db, databaseUrl, queues, producer, log: quietLog, pollMs: 200, batchSize: 50 })]
await relays[0]!.start()
const closers: Array<() => Promise<unknown>> = []

// Registered after createWorld: runs before the world drops its database. Never throws.
t.teardown(async () => {
  for (const step of [...closers.reverse(), () => Promise.all(relays.map((r) => r.stop())), () => lifecycleQueue.close(), () => Promise.all(Object.values(queues).map((q) => q.close())), () => producer.quit(), () => connection.quit()]) {
    await step().catch((err: Error) => console.error(`teardown: ${err.message}`))
  }
})

/** A call whose one assignment goes to `queue` (police for a noise call, EMS for an overdose). */
async function post(agency: string, queue: 'police' | 'ems' = 'police'): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: queue === 'ems' ? 'OD' : 'NOISE', agency }) })
  if (res.statusCode !== 201) throw new Error(`ingest answered ${res.statusCode}: ${res.body}`)
  const list = res.json().decision.assignments as { id: string; queue: string }[]
  if (list.length !== 1 || list[0]!.queue !== queue) throw new Error(`expected one ${queue} assignment`)
  return list[0]!.id
}

const outboxOf = (id: string) => db.selectFrom('outbox').selectAll().where('assignment_id', '=', id).orderBy('id').execute()

/** Waits until the latest outbox row of the assignment is marked sent; answers when. */
async function sent(id: string): Promise<Date> {
  return eventually(async () => (await outboxOf(id)).at(-1)?.sent_at ?? undefined)
}

const statusOf = async (id: string) => (await db.selectFrom('assignments').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status
const transitionsOf = (id: string) => db.selectFrom('assignment_transitions').select(['from_status', 'to_status', 'actor', 'reason']).where('assignment_id', '=', id).orderBy('id').execute()
const offers = async (id: string) => (await transitionsOf(id)).filter((x) => x.from_status === 'queued' && x.to_status === 'offered').length
const at = (d: Date, ms: number) => new Date(d.getTime() + ms)
const mine = (list: Resent[], ids: string | string[]) => list.filter((r) => ([] as string[]).concat(ids).includes(r.assignmentId))
const sweepWith = (opts: Omit<ResendOptions, 'afterMs'>) => resendLost(db, queues, { afterMs: AFTER_MS, ...opts })
const sweepAt = async (now: Date) => (await sweepWith({ now })).resent

/** The real responder workers on the police queue, until the subtest ends. */
function startWorkers(t: Tap) {
  const w = createResponderWorkers({ db, connection, prefix, concurrency: 4, queues: ['police'], lifecycle: lifecycleQueue, ackDeadlines: config.ACK_DEADLINES, log: quietLog })
  w.start()
  t.teardown(() => w.close())
  return w
}

/** A worker whose every job fails for good at once: a job whose worker died twice ends the same way. */
function startFailingWorker(t: Tap) {
  const w = new Worker('police', async () => {
    throw new UnrecoverableError('test: this job fails for good')
  }, { connection, prefix })
  w.on('error', () => {})
  t.teardown(() => w.close())
  return w
}

interface Tap {
  teardown(fn: () => unknown): void
}

t.test('a job that failed for good: nothing else ever offers the assignment; the re-send does, once', async (t) => {
  const failing = startFailingWorker(t)
  const id = await post('resend-failed')
  await eventually(async () => (await queues.police.getJobState(jobIdFor(id))) === 'failed')
  const sentAt = await sent(id)
  await failing.close()

  // The hole: acknowledgement deadlines start at the offer, so the lifecycle sweep never sees it.
  const a = await db.selectFrom('assignments').select(['status', 'ack_deadline_at']).where('id', '=', id).executeTakeFirstOrThrow()
  t.same(a, { status: 'queued', ack_deadline_at: null }, 'queued, without a deadline')
  const aYearLater = at(new Date(), 365 * 24 * 3600_000)
  const lifecycle = await sweep(db, lifecycleQueue, config.ACK_DEADLINES, aYearLater)
  t.same(lifecycle, { escalated: 0, offered: 0, overdue: 0, failed: 0 }, 'the lifecycle sweep does nothing for it')
  t.equal(await statusOf(id), 'queued', 'still queued a year later')

  t.same(mine(await sweepAt(at(sentAt, AFTER_MS - 1000)), id), [], 'not before RELAY_RESEND_AFTER_MS')
  const resent = mine(await sweepAt(at(sentAt, AFTER_MS + 1000)), id)
  t.same(resent, [{ assignmentId: id, queue: 'police', jobId: `${jobIdFor(id)}-r1`, previousJobId: jobIdFor(id), resend: 1, reason: 'failed' }])

  startWorkers(t)
  // The relay marks a row sent when its transaction commits, after the job is in Redis: a worker
  // can offer the assignment first.
  await eventually(async () => (await statusOf(id)) === 'offered' && (await outboxOf(id)).every((r) => r.sent_at !== null))
  const rows = await outboxOf(id)
  t.same(rows.map((r) => [r.job_id, r.resend, r.sent_at !== null]), [[jobIdFor(id), 0, true], [resendJobIdFor(id, 1), 1, true]], 'a second outbox row, sent')
  t.same(rows[1]!.payload, rows[0]!.payload, 'the same job data')
  t.same(
    (await transitionsOf(id)).map((x) => `${x.from_status}>${x.to_status}@${x.actor}`),
    ['null>queued@router', `queued>queued@${RESEND_ACTOR}`, 'queued>offered@worker:police'],
    'one re-send, one offer',
  )
  t.match((await transitionsOf(id))[1]!.reason, `re-sent as job ${jobIdFor(id)}-r1: job ${jobIdFor(id)} failed for good`)
  t.equal(await queues.police.getJobState(jobIdFor(id)), 'failed', 'the failed job stays listed for the admins')
  t.ok((await db.selectFrom('assignments').select('ack_deadline_at').where('id', '=', id).executeTakeFirstOrThrow()).ack_deadline_at, 'now its deadline runs')
  t.same(mine(await sweepAt(aYearLater), id), [], 'offered: never re-sent again')
})

t.test('a job Redis lost is re-sent; lost again, it is re-sent after twice as long', async (t) => {
  const id = await post('resend-missing')
  const sentAt = await sent(id)
  t.equal(await queues.police.getJobState(jobIdFor(id)), 'waiting')
  // Redis restarted without an append-only file: the job is gone, the outbox row says sent.
  await queues.police.remove(jobIdFor(id))
  t.equal(await queues.police.getJobState(jobIdFor(id)), 'unknown')

  t.same(mine(await sweepAt(at(sentAt, AFTER_MS + 1000)), id).map((r) => [r.jobId, r.reason]), [[resendJobIdFor(id, 1), 'missing']])
  const again = await sent(id)
  await eventually(async () => (await queues.police.getJobState(resendJobIdFor(id, 1))) === 'waiting')
  await queues.police.remove(resendJobIdFor(id, 1))
  t.same(mine(await sweepAt(at(again, AFTER_MS + 1000)), id), [], 'the second re-send waits twice as long')
  t.same(mine(await sweepAt(at(again, 2 * AFTER_MS + 1000)), id).map((r) => [r.jobId, r.resend, r.reason]), [[resendJobIdFor(id, 2), 2, 'missing']])

  startWorkers(t)
  await eventually(async () => (await statusOf(id)) === 'offered')
  t.equal(await offers(id), 1, 'offered once')
  t.equal((await outboxOf(id)).length, 3)
  t.equal((await transitionsOf(id)).filter((x) => x.actor === RESEND_ACTOR).length, 2)
})

t.test('a job still waiting, or active, is not re-sent; nor an assignment a worker is offering right now', async (t) => {
  const farFuture = at(new Date(), 365 * 24 * 3600_000)

  // Waiting: no worker yet, however long it waits.
  const waiting = await post('resend-waiting')
  await sent(waiting)
  t.equal(await queues.police.getJobState(jobIdFor(waiting)), 'waiting')
  t.same(mine(await sweepAt(farFuture), waiting), [], 'waiting: not re-sent')

  // Active: a worker has it (slow, or dead with its lock not yet lapsed).
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const slow = new Worker<AssignmentJob>('police', async (job: Job<AssignmentJob>) => {
    await gate
    await offerAssignment(db, job)
  }, { connection, prefix })
  slow.on('error', () => {})
  t.teardown(() => slow.close())
  await eventually(async () => (await queues.police.getJobState(jobIdFor(waiting))) === 'active')
  t.same(mine(await sweepAt(farFuture), waiting), [], 'active: not re-sent')
  release()
  await eventually(async () => (await statusOf(waiting)) === 'offered')
  await slow.close()
  t.equal((await outboxOf(waiting)).length, 1, 'one outbox row')
  t.equal(await offers(waiting), 1)

  // The job is gone, but a worker holds the assignment row (mid-offer): skipped, not waited for.
  const held = await post('resend-held')
  await sent(held)
  await queues.police.remove(jobIdFor(held))
  const client = await openTransaction(t, world.pool)
  await client.query('select 1 from assignments where id = $1 for update', [held])
  const started = Date.now()
  t.same(mine(await sweepAt(farFuture), held), [], 'locked: skipped')
  t.ok(Date.now() - started < 2000, 'without waiting for the lock')
  await client.query('rollback')
  t.equal(mine(await sweepAt(farFuture), held).length, 1, 're-sent once the row is free')
  startWorkers(t)
  await eventually(async () => (await statusOf(held)) === 'offered')
  t.equal(await offers(held), 1)
})

t.test('two relays sweeping at once re-send each lost job once', async (t) => {
  // Two more "processes": their own Postgres pools and Redis connections.
  const others = [0, 1].map(() => {
    const odb = createDb(createPool({ connectionString: databaseUrl, max: 4, statementTimeoutMs: 10_000 }))
    const oproducer = createRedis(REDIS_URL, 'producer')
    return { db: odb, producer: oproducer, queues: createQueues(oproducer, prefix) }
  })
  t.teardown(async () => {
    for (const o of others) {
      await Promise.all(Object.values(o.queues).map((q) => q.close()))
      await o.producer.quit()
      await o.db.destroy()
    }
  })
  const ids: string[] = []
  for (let i = 0; i < 6; i++) ids.push(await post('resend-race'))
  let latest = new Date(0)
  for (const id of ids) {
    const s = await sent(id)
    if (s > latest) latest = s
    await queues.police.remove(jobIdFor(id))
  }
  const now = at(latest, AFTER_MS + 1000)
  const results = (
    await Promise.all([
      resendLost(db, queues, { afterMs: AFTER_MS, now }),
      ...others.map((o) => resendLost(o.db, o.queues, { afterMs: AFTER_MS, now })),
      ...others.map((o) => resendLost(o.db, o.queues, { afterMs: AFTER_MS, now })),
    ])
  ).map((s) => s.resent)
  const all = mine(results.flat(), ids)
  t.equal(all.length, ids.length, 'as many re-sends as lost jobs')
  t.same([...new Set(all.map((r) => r.assignmentId))].sort(), [...ids].sort(), 'one per assignment')
  say(`re-sends per sweep: ${results.map((r) => mine(r, ids).length).join(', ')}`)
  for (const id of ids) {
    t.equal((await outboxOf(id)).length, 2, 'two outbox rows')
    t.equal((await transitionsOf(id)).filter((x) => x.actor === RESEND_ACTOR).length, 1, 'one re-send recorded')
  }
  // And a second round finds nothing more to do.
  t.same(mine((await Promise.all([resendLost(db, queues, { afterMs: AFTER_MS, now }), resendLost(others[0]!.db, others[0]!.queues, { afterMs: AFTER_MS, now })])).flatMap((s) => s.resent), ids), [])

  startWorkers(t)
  await eventually(async () => (await Promise.all(ids.map(statusOf))).every((s) => s === 'offered'))
  for (const id of ids) t.equal(await offers(id), 1, 'offered once')
})

t.test("a lost job whose call's row another session holds does not stop the sweep re-sending the others", async (t) => {
  // The service's own lock time-out (a second by default): the wait ends in 55P03, not the world
  // pool's 10 s statement time-out.
  const ldb = createDb(createPool({ connectionString: databaseUrl, max: 4, statementTimeoutMs: 10_000, lockTimeoutMs: 500 }))
  t.teardown(() => ldb.destroy())
  // Two lost jobs; the first (the older outbox row, the first the sweep takes) is on a call a session left open holds.
  const held = await post('resend-call-held')
  const free = await post('resend-call-free')
  let latest = new Date(0)
  for (const id of [held, free]) {
    const s = await sent(id)
    if (s > latest) latest = s
    await queues.police.remove(jobIdFor(id))
  }
  const { call_id } = await db.selectFrom('assignments').select('call_id').where('id', '=', held).executeTakeFirstOrThrow()
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [call_id])
  const now = at(latest, AFTER_MS + 1000)
  const during = await resendLost(ldb, queues, { afterMs: AFTER_MS, now })
  await holder.query('rollback')
  t.same(mine(during.resent, [held, free]).map((r) => r.assignmentId), [free], 'the other re-sent while the call is held')
  t.equal(during.failed, 1, 'the held one counted as not done')
  t.equal((await outboxOf(held)).length, 1, 'the held one left as it was')
  // Once the row is free, the next sweep does it.
  const after = await resendLost(ldb, queues, { afterMs: AFTER_MS, now })
  t.same(mine(after.resent, [held, free]).map((r) => r.jobId), [resendJobIdFor(held, 1)])
  t.equal(after.failed, 0)
})

t.test('the relay sweeps by itself: re-sends, logs ids only, counts', async (t) => {
  const lines: string[] = []
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }))
  const metrics = createMetrics()
  const seen: Resent[] = []
  const relay = createOutboxRelay({
    db,
    databaseUrl,
    queues,
    producer,
    log,
    pollMs: 200,
    batchSize: 50,
    resend: { afterMs: 300, everyMs: 100, metrics, onResent: (r) => seen.push(r) },
  })
  relays.push(relay)
  await relay.start()

  const id = await post('resend-relay')
  await sent(id)
  await queues.police.remove(jobIdFor(id))
  await eventually(async () => (await outboxOf(id)).length === 2)
  startWorkers(t)
  await eventually(async () => (await statusOf(id)) === 'offered')
  await relay.stop()
  await relay.stop()

  t.same(mine(seen, id).map((r) => [r.jobId, r.reason]), [[resendJobIdFor(id, 1), 'missing']])
  t.equal(await offers(id), 1)
  const counted = (await metrics.outboxResends.get()).values.find((v) => v.labels.queue === 'police' && v.labels.reason === 'missing')?.value
  t.equal(counted, seen.filter((r) => r.queue === 'police' && r.reason === 'missing').length, 'the relay counts each re-send in the metric, by queue and reason')
  const line = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.assignmentId === id)
  t.match(line, { level: 40, msg: /re-sent/, assignmentId: id, queue: 'police', jobId: resendJobIdFor(id, 1), previousJobId: jobIdFor(id), reason: 'missing', resend: 1 })
  const text = lines.join('')
  for (const personal of ['Marta', 'Lindqvist', 'Ekdahl', '651-555', 'Vermillion', 'pacing']) t.notOk(text.includes(personal), `no "${personal}" in the relay's log`)
})

t.test('a backlog of waiting jobs older than a lost one: one sweep looks past them and re-sends the lost one, once', async (t) => {
  // The EMS workers are down: more EMS jobs wait in Redis than one batch holds, all sent before a
  // police job that Redis lost.
  const waiting: string[] = []
  for (let i = 0; i < 5; i++) waiting.push(await post('resend-backlog', 'ems'))
  for (const id of waiting) await sent(id)
  const lost = await post('resend-behind-backlog')
  const lostSentAt = await sent(lost)
  await queues.police.remove(jobIdFor(lost))
  for (const id of waiting) t.equal(await queues.ems.getJobState(jobIdFor(id)), 'waiting', 'EMS job waiting')

  const now = at(lostSentAt, AFTER_MS + 1000)
  const first = await sweepWith({ now, batchSize: 3 })
  t.same(mine(first.resent, lost).map((r) => [r.jobId, r.reason]), [[resendJobIdFor(lost, 1), 'missing']], 'one sweep finds it behind a full batch of waiting jobs')
  t.same(mine(first.resent, waiting), [], 'the waiting ones are left alone')
  t.same(mine((await sweepWith({ now, batchSize: 3 })).resent, [lost, ...waiting]), [], 'the next sweep re-sends nothing')

  t.equal((await outboxOf(lost)).length, 2, 'one new outbox row for the lost job')
  t.equal((await transitionsOf(lost)).filter((x) => x.actor === RESEND_ACTOR).length, 1, 'one re-send recorded')
  for (const id of waiting) {
    t.equal((await outboxOf(id)).length, 1, 'a waiting job: still one outbox row')
    t.same((await transitionsOf(id)).map((x) => x.actor), ['router'], 'and no re-send recorded')
    t.equal(await queues.ems.getJobState(jobIdFor(id)), 'waiting', 'its job still waiting')
  }
})

t.test("a sweep's work stays bounded; the sweeps after it carry on where it stopped, each candidate looked at once", async (t) => {
  // Five more EMS jobs waiting, then one more lost police job: the newest candidate.
  const waiting: string[] = []
  for (let i = 0; i < 5; i++) waiting.push(await post('resend-bound', 'ems'))
  for (const id of waiting) await sent(id)
  const lost = await post('resend-bound-lost')
  const lostSentAt = await sent(lost)
  await queues.police.remove(jobIdFor(lost))
  const now = at(lostSentAt, AFTER_MS + 1000)

  // Every job the sweeps look up, and every state they ask for: BullMQ's state script scans the
  // wait list to find a waiting job, which a backlog makes long.
  const asked: string[] = []
  const stateAsked: string[] = []
  const counted = Object.fromEntries(
    Object.entries(queues).map(([name, q]) => [
      name,
      Object.assign(Object.create(q) as typeof q, {
        getJob: (id: string) => (asked.push(id), q.getJob(id)),
        getJobState: (id: string) => (stateAsked.push(id), q.getJobState(id)),
      }),
    ]),
  ) as typeof queues
  const batchSize = 2
  const maxPages = 2
  const sweeps = []
  let from: number | undefined
  do {
    const before = asked.length
    const s = await resendLost(db, counted, { afterMs: AFTER_MS, now, batchSize, maxPages, from })
    t.ok(s.pages <= maxPages, `sweep ${sweeps.length + 1}: ${s.pages} candidate queries, at most ${maxPages}`)
    t.ok(s.looked <= batchSize * maxPages, `sweep ${sweeps.length + 1}: ${s.looked} job states asked, at most ${batchSize * maxPages}`)
    t.equal(asked.length - before, s.looked, 'as many as it says')
    sweeps.push(s)
    from = s.next
  } while (from !== undefined && sweeps.length < 20)
  say(`sweeps: ${sweeps.map((s) => `${s.looked} looked, ${s.resent.length} re-sent, next ${s.next ?? '-'}`).join('; ')}`)

  t.ok(sweeps.length > 1 && sweeps[0]!.next !== undefined, 'the first sweep stopped at its bound')
  t.same(mine(sweeps[0]!.resent, lost), [], 'before the lost job, the newest')
  t.equal(from, undefined, 'a later one reached the end')
  t.same(mine(sweeps.flatMap((s) => s.resent), lost).map((r) => r.jobId), [resendJobIdFor(lost, 1)], 're-sent once, by a later sweep')
  t.same(mine(sweeps.flatMap((s) => s.resent), waiting), [], 'the waiting ones are left alone')
  t.equal(new Set(asked).size, asked.length, 'no job asked about twice')
  for (const id of [...waiting, lost]) t.ok(asked.includes(jobIdFor(id)), 'every candidate looked at')
  t.same(stateAsked.filter((id) => waiting.map(jobIdFor).includes(id)), [], 'no state asked of a waiting job: no scan of the wait list')
  t.equal((await transitionsOf(lost)).filter((x) => x.actor === RESEND_ACTOR).length, 1, 'one re-send recorded')
})

t.test('the relay carries its sweep on where the last one stopped', async (t) => {
  // One candidate a page, two pages a sweep: the ten EMS jobs waiting from above, and more, would
  // hide the lost job from sweeps that each started from the oldest.
  const relay = createOutboxRelay({ db, databaseUrl, queues, producer, log: quietLog, pollMs: 200, batchSize: 1, resend: { afterMs: 300, everyMs: 100, maxPages: 2 } })
  relays.push(relay)
  const waiting = (await db.selectFrom('assignments').select('id').where('queue', '=', 'ems').where('status', '=', 'queued').execute()).map((a) => a.id)
  t.ok(waiting.length >= 10, `${waiting.length} EMS assignments waiting`)
  const lost = await post('resend-relay-cursor')
  await sent(lost)
  await queues.police.remove(jobIdFor(lost))
  await relay.start()
  await eventually(async () => (await outboxOf(lost)).length === 2)
  await relay.stop()
  t.equal((await transitionsOf(lost)).filter((x) => x.actor === RESEND_ACTOR).length, 1, 'the lost job re-sent once')
  for (const id of waiting) t.equal((await outboxOf(id)).length, 1, 'a waiting EMS job is not re-sent')
})
