import { performance } from 'node:perf_hooks'
import { isDeepStrictEqual } from 'node:util'
import t, { type Test } from 'tap'
import { UnrecoverableError, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import { sql, type RawBuilder } from 'kysely'
import { moveAssignment } from '../../src/assignments/repository.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { createOutboxRelay, type OutboxRelay } from '../../src/queue/outbox-relay.js'
import { ASSIGNMENT_JOB_NAME, createQueues, jobIdFor, type AssignmentQueue } from '../../src/queue/queues.js'
import { createRedis } from '../../src/queue/redis.js'
import { QUEUES, type QueueName } from '../../src/routing/index.js'
import { createResponderWorkers, offerAssignment } from '../../src/workers/responder-worker.js'
import { callEvent } from '../helpers/events.js'
import { proxyPostgres } from '../helpers/tcp-proxy.js'
import { createWorld, eventually, quietLog, recordingLog, REDIS_URL, say } from '../helpers/world.js'
import { closeQueues, deliveryReport, inspectQueues } from './fixtures/delivery.js'

// Only a NOTIFY can explain a delivery within seconds: the safety-net poll is a minute away.
const POLL_MS = 60_000

const world = await createWorld(t)
const { app, db, prefix, databaseUrl } = world

const producer = createRedis(REDIS_URL, 'producer')
const queues = createQueues(producer, prefix)
const workerConnection = createRedis(REDIS_URL, 'worker')
const workers = createResponderWorkers({ db, connection: workerConnection, prefix, concurrency: 4, log: quietLog })
const inspector = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
inspector.on('error', () => {})
const inspect = inspectQueues(inspector, prefix)
const relays: OutboxRelay[] = []

// Registered after createWorld, so it runs before the world drops the database (tap: last in, first out).
t.teardown(async () => {
  const steps: [string, () => Promise<unknown>][] = [
    ['relays', () => Promise.all(relays.map((r) => r.stop()))],
    ['workers', () => workers.close()],
    ['queues', () => closeQueues(queues)],
    ['inspect queues', () => closeQueues(inspect)],
    ['producer', () => producer.quit()],
    ['worker connection', () => workerConnection.quit()],
    ['inspector', () => inspector.quit()],
  ]
  // Never throws: a failing teardown would skip the world's.
  for (const [name, step] of steps) await step().catch((err: Error) => console.error(`teardown ${name}: ${err.message}`))
})

function newRelay(batchSize = 20, q: Record<QueueName, AssignmentQueue> = queues): OutboxRelay {
  const relay = createOutboxRelay({ db, databaseUrl, queues: q, log: quietLog, pollMs: POLL_MS, batchSize })
  relays.push(relay)
  return relay
}

interface Result {
  callId: string
  decision: { route: string; assignments: { id: string; queue: QueueName; role: string; status: string }[] }
}

type Event = ReturnType<typeof callEvent>

async function post(event: Event): Promise<Result> {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: event })
  if (res.statusCode !== 201) throw new Error(`POST /v1/call-events answered ${res.statusCode}: ${res.body}`)
  return res.json<Result>()
}

/** A mix of calls: one and two responders, and updates that add a responder to an open call. */
function mix(n: number): Event[] {
  const events: Event[] = []
  const edpCalls: string[] = []
  for (let i = 0; i < n; i++) {
    switch (i % 9) {
      case 0: {
        const ev = callEvent({ natureCode: 'EDP' })
        edpCalls.push(ev.call.callId)
        events.push(ev)
        break
      }
      case 1:
        events.push(callEvent({ natureCode: 'EDP', flags: { weapons: true } }))
        break
      case 2:
        events.push(callEvent({ natureCode: 'STABBING', flags: { weapons: true, injury: true } }))
        break
      case 3:
        events.push(callEvent({ natureCode: 'OD', flags: { medicalEmergency: true } }))
        break
      case 4:
        events.push(callEvent({ natureCode: 'NOISE' }))
        break
      case 5:
        events.push(callEvent({ natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true } }))
        break
      case 6:
        events.push(callEvent({ natureCode: 'WELFARE', flags: { coResponseRequested: true, mentalHealth: true } }))
        break
      case 7:
        // The EDP call of this round turns violent: police join it.
        events.push(callEvent({ type: 'call.updated', callId: edpCalls[edpCalls.length - 1]!, natureCode: 'EDP', flags: { weapons: true } }))
        break
      default:
        events.push(callEvent({ natureCode: 'ASSAULT', flags: { violence: true } }))
    }
  }
  return events
}

async function count(query: RawBuilder<{ n: number }>): Promise<number> {
  const { rows } = await query.execute(db)
  return Number(rows[0]?.n ?? 0)
}

/** How many outbox rows are not sent yet. */
const allUnsent = () => count(sql<{ n: number }>`select count(*)::int as n from outbox where sent_at is null`)

/** How many of these assignments' outbox rows are not sent yet. */
const unsentOf = async (ids: string[]): Promise<number> =>
  (await db.selectFrom('outbox').select('id').where('assignment_id', 'in', ids).where('sent_at', 'is', null).execute()).length

const pendingWork = async () => ({
  unsent: await allUnsent(),
  queued: await count(sql<{ n: number }>`select count(*)::int as n from assignments where status = 'queued'`),
  unfinishedJobs: (
    await Promise.all(QUEUES.map((q) => inspect[q].getJobCounts('waiting', 'active', 'delayed', 'prioritized')))
  ).reduce((sum, c) => sum + Object.values(c).reduce((a, b) => a + b, 0), 0),
})

/** Waits until the relay sent every row and the workers finished every job. */
async function settled(ms = 15_000): Promise<void> {
  await eventually(async () => {
    const p = await pendingWork()
    return p.unsent === 0 && p.queued === 0 && p.unfinishedJobs === 0
  }, ms)
}

const transitionsOf = (id: string) =>
  db.selectFrom('assignment_transitions').select(['from_status', 'to_status']).where('assignment_id', '=', id).orderBy('id').execute()

const outboxJob = async (assignmentId: string): Promise<Pick<Job<unknown>, 'id' | 'data'>> => {
  const row = await db.selectFrom('outbox').select(['job_id', 'payload']).where('assignment_id', '=', assignmentId).executeTakeFirstOrThrow()
  return { id: row.job_id, data: row.payload }
}

// Assignments a console moved on before the worker saw them: they must stay where the console put them.
const movedOnByConsole = new Set<string>()

t.test('a job processed twice, or after a console moved the assignment on, changes nothing', async (t) => {
  // No relay and no worker yet: the processor is called directly.
  const r = await post(callEvent({ natureCode: 'NOISE' }))
  const a = r.decision.assignments[0]!
  const job = await outboxJob(a.id)
  t.equal(job.id, jobIdFor(a.id))

  const outcomes = await Promise.all([offerAssignment(db, job), offerAssignment(db, job)])
  t.same(outcomes.sort(), ['offered', 'unchanged'], 'two deliveries at once: one offers, the other sees it offered')
  const before = await db.selectFrom('assignments').selectAll().where('id', '=', a.id).executeTakeFirstOrThrow()
  t.equal(await offerAssignment(db, job), 'unchanged', 'a third delivery')
  const after = await db.selectFrom('assignments').selectAll().where('id', '=', a.id).executeTakeFirstOrThrow()
  t.same(after, before, 'the assignment row is untouched')
  t.same(await transitionsOf(a.id), [
    { from_status: null, to_status: 'queued' },
    { from_status: 'queued', to_status: 'offered' },
  ])

  const r2 = await post(callEvent({ natureCode: 'NOISE' }))
  const b = r2.decision.assignments[0]!
  await moveAssignment(db, b.id, 'acknowledge', { actor: 'console:test' })
  movedOnByConsole.add(b.id)
  t.equal(await offerAssignment(db, await outboxJob(b.id)), 'unchanged')
  const bRow = await db.selectFrom('assignments').select('status').where('id', '=', b.id).executeTakeFirstOrThrow()
  t.equal(bRow.status, 'acknowledged', 'a late delivery does not pull an acknowledged assignment back to offered')
  t.same(await transitionsOf(b.id), [
    { from_status: null, to_status: 'queued' },
    { from_status: 'queued', to_status: 'acknowledged' },
  ])
})

t.test('malformed job data and unknown assignments are unrecoverable', async (t) => {
  const valid = { assignmentId: '6b1a3a43-5d4c-4b8e-9a57-3f0c1a2b3c4d', callId: 'DC26-x', agency: 'hastings-pd', queue: 'police', role: 'primary' }
  const malformed: [string, unknown][] = [
    ['null', null],
    ['a string', 'asg-1'],
    ['no assignment id', { ...valid, assignmentId: undefined }],
    ['an assignment id that is not a uuid', { ...valid, assignmentId: '42' }],
    ['an unknown queue', { ...valid, queue: 'fire' }],
    ['an unknown role', { ...valid, role: 'observer' }],
    ['an extra field (personal data must not ride along)', { ...valid, callerName: 'Marta Lindqvist' }],
  ]
  for (const [name, data] of malformed) {
    const err = await offerAssignment(db, { id: 'asg-bad', data }).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof UnrecoverableError, `${name}: UnrecoverableError`)
    t.match((err as Error | undefined)?.message, /malformed/, name)
  }
  const unknown = await offerAssignment(db, { id: jobIdFor(valid.assignmentId), data: valid }).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(unknown instanceof UnrecoverableError, 'unknown assignment id: UnrecoverableError')
  t.match((unknown as Error | undefined)?.message, /no such assignment/)
})

t.test('one relay and the workers deliver every assignment exactly once', async (t) => {
  workers.start()
  await Promise.all(workers.workers.map((w) => w.waitUntilReady()))
  const relay = newRelay(20)
  await relay.start()

  const results: Result[] = []
  for (const ev of mix(50)) results.push(await post(ev))
  await settled()

  const report = await deliveryReport(db, inspect, inspector)
  t.ok(report.assignments >= 70, `a real mix: ${report.assignments} assignments from 50 events`)
  t.equal(report.outboxRows, report.assignments, 'one outbox row per assignment')
  t.equal(report.unsent, 0, 'every outbox row has sent_at')
  t.equal(report.attemptsNotOne, 0, 'every outbox row was sent by exactly one successful attempt')
  t.equal(report.jobs, report.assignments, 'one job per assignment')
  t.same(report.missing, [], 'every assignment has its job, on the queue named by its queue column')
  t.same(report.stray, [], 'no job without its assignment')
  t.same(report.addedTwice, [], 'no job added twice')
  t.equal(report.duplicateAdds, 0, 'no job id re-sent')
  const acked = [...movedOnByConsole]
  t.same(
    report.notOffered.map((s) => s.split(' ')[0]),
    acked,
    'every assignment is offered, except the one a console acknowledged first',
  )
  t.same(
    report.offeredNotOnce.map((s) => s.split(' ')[0]),
    acked,
    'exactly one queued → offered transition per assignment',
  )

  const rows = await db.selectFrom('outbox').select(['assignment_id', 'queue', 'job_id', 'payload']).execute()
  const wrongJobs: string[] = []
  for (const row of rows) {
    const job = report.byJobId.get(jobIdFor(row.assignment_id))
    if (!job) continue // reported as missing above
    const state = await job.getState()
    const same = job.id === row.job_id && job.name === ASSIGNMENT_JOB_NAME && isDeepStrictEqual(job.data, row.payload)
    if (!same || state !== 'completed') wrongJobs.push(`${job.id}: ${job.name} ${JSON.stringify(job.data)} ${state}`)
  }
  t.same(wrongJobs, [], 'each job is named assignment.offer, carries its outbox payload (ids only) and is completed')

  for (const name of QUEUES) {
    const counts = await inspect[name].getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed')
    const expected = await count(sql<{ n: number }>`select count(*)::int as n from assignments where queue = ${name}`)
    t.same(counts, { completed: expected, failed: 0, waiting: 0, paused: 0, active: 0, delayed: 0 }, `queue ${name}: ${expected} jobs, all completed`)
  }

  const multi = new Map<string, number>()
  for (const r of results) multi.set(r.callId, Math.max(multi.get(r.callId) ?? 0, r.decision.assignments.length))
  const twoOrMore = [...multi.values()].filter((n) => n >= 2).length
  t.ok(twoOrMore >= 15, `${twoOrMore} calls have two responders`)
  const stabbing = results.filter((r) => r.decision.assignments.map((a) => `${a.queue}:${a.role}`).sort().join() === 'ems:support,police:primary')
  t.ok(stabbing.length >= 5, 'police + EMS calls went to two queues')
})

t.test('the relay wakes on NOTIFY, not on its poll', async (t) => {
  t.equal(relays.length, 1, 'the relay of the previous test, idle since its last batch')
  for (const round of [1, 2]) {
    const started = Date.now()
    const posted = await Promise.all(Array.from({ length: 5 }, () => post(callEvent({ natureCode: 'NOISE' }))))
    const ids = posted.flatMap((r) => r.decision.assignments.map((a) => a.id))
    const sentWithin = await eventually(async () => {
      return (await unsentOf(ids)) === 0 && Date.now() - started
      // 10 s, not the poll's 60: the bound tells NOTIFY from the poll, with room for five posts and
      // their sends on a loaded CI machine running other test files beside this one.
    }, 10_000).catch(() => undefined)
    t.ok(sentWithin !== undefined, `round ${round}: sent within 10 s of posting (${sentWithin} ms) with a ${POLL_MS / 1000} s poll`)
    const lag = await count(sql<{ n: number }>`
      select coalesce(max(extract(epoch from sent_at - created_at) * 1000), 0)::int as n from outbox where assignment_id = any(${ids}::uuid[])`)
    t.ok(lag < 10_000, `round ${round}: each row sent within ${lag} ms of its commit`)
  }
  await settled()
})

/** The same queues, but every job id a relay hands to BullMQ is written down. */
function recordingQueues(sent: string[]): Record<QueueName, AssignmentQueue> {
  const wrap = (q: AssignmentQueue): AssignmentQueue =>
    new Proxy(q, {
      get(target, prop) {
        if (prop === 'addBulk') {
          return (jobs: Parameters<AssignmentQueue['addBulk']>[0]) => {
            for (const j of jobs) sent.push(j.opts!.jobId!)
            return target.addBulk(jobs)
          }
        }
        const v = Reflect.get(target, prop, target) as unknown
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      },
    })
  return Object.fromEntries(QUEUES.map((n) => [n, wrap(queues[n])])) as Record<QueueName, AssignmentQueue>
}

t.test('two relays at once never send a row twice', async (t) => {
  await relays[0]!.stop()
  const sentBy: [string[], string[]] = [[], []]
  const pair = [newRelay(3, recordingQueues(sentBy[0])), newRelay(3, recordingQueues(sentBy[1]))]
  await Promise.all(pair.map((r) => r.start()))

  const events = Array.from({ length: 40 }, (_, i) =>
    i % 2 ? callEvent({ natureCode: 'EDP', flags: { weapons: true } }) : callEvent({ natureCode: 'STABBING', flags: { weapons: true, injury: true } }),
  )
  // Ten clients posting at once: commits (and NOTIFYs) arrive while both relays are busy.
  const posted: Result[] = []
  for (let i = 0; i < events.length; i += 10) posted.push(...(await Promise.all(events.slice(i, i + 10).map(post))))
  await settled()

  const fresh = new Set(posted.flatMap((r) => r.decision.assignments.map((a) => jobIdFor(a.id))))
  t.equal(fresh.size, 80)
  const [a, b] = sentBy
  const both = a.filter((id) => b.includes(id))
  t.same(both, [], 'no job id was handed to BullMQ by both relays')
  t.equal(new Set(a).size, a.length, 'relay A sent each job id once')
  t.equal(new Set(b).size, b.length, 'relay B sent each job id once')
  t.same(new Set([...a, ...b]), fresh, 'together they sent every new row')
  say(`relay A sent ${a.length}, relay B sent ${b.length}`)

  const report = await deliveryReport(db, inspect, inspector)
  t.equal(report.unsent, 0)
  t.equal(report.attemptsNotOne, 0, 'outbox attempts = 1 for every row: no row was processed twice')
  t.equal(report.duplicateAdds, 0, 'BullMQ saw no re-sent job id')
  t.same(report.addedTwice, [])
  t.equal(report.jobs, report.assignments)
  t.same(report.missing, [])
  t.equal(report.offeredNotOnce.length, movedOnByConsole.size, 'one queued → offered transition per assignment')
})

t.test('a worker fails malformed and orphaned jobs at once, without retrying them', async (t) => {
  const police = workers.workers.find((w) => w.name === 'police')!
  const failed = new Map<string, { job: Job; err: Error }>()
  const onFailed = (job: Job | undefined, err: Error) => {
    if (job?.id) failed.set(job.id, { job, err })
  }
  police.on('failed', onFailed)
  t.teardown(() => void police.off('failed', onFailed))

  const orphan = { assignmentId: '0f0e0d0c-0b0a-4908-8706-050403020100', callId: 'DC26-none', agency: 'hastings-pd', queue: 'police', role: 'primary' }
  // Through the producer's queue, with its ten retries: an unrecoverable error must not use them.
  await queues.police.add(ASSIGNMENT_JOB_NAME, { nonsense: true } as never, { jobId: 'bad-malformed' })
  await queues.police.add(ASSIGNMENT_JOB_NAME, orphan as never, { jobId: 'bad-orphan' })
  await eventually(async () => failed.has('bad-malformed') && failed.has('bad-orphan'), 10_000)

  for (const [id, reason] of [
    ['bad-malformed', /malformed/],
    ['bad-orphan', /no such assignment/],
  ] as const) {
    const job = await inspect.police.getJob(id)
    t.equal(await job?.getState(), 'failed', `${id}: failed`)
    t.equal(job?.attemptsMade, 1, `${id}: tried once, not ten times`)
    t.match(job?.failedReason, reason)
    t.equal(failed.get(id)?.err.name, 'UnrecoverableError')
  }
  await inspect.police.remove('bad-malformed')
  await inspect.police.remove('bad-orphan')
})

/** The relays' LISTEN connections open now. */
const listeners = () =>
  count(sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = ${world.name} and application_name = 'cad-router-relay'`)

/** Whether `p` settles within 10 s. */
const settlesWithin10s = (p: Promise<unknown>): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000)))
  return Promise.race([p.then(() => true), late]).finally(() => clearTimeout(timer))
}

t.test('stop() and close() twice are fine, and nothing is left listening', async (t) => {
  const extra = newRelay(5)
  await extra.stop() // never started
  await extra.start()
  await extra.start() // already running
  t.ok((await listeners()) >= 1, 'a running relay holds a LISTEN connection')

  for (const r of relays) {
    await r.stop()
    await r.stop()
  }
  await eventually(async () => (await listeners()) === 0, 5_000)
  t.pass('every stopped relay closed its LISTEN connection')

  await workers.close()
  await workers.close()
  t.ok(
    workers.workers.every((w) => !w.isRunning()),
    'every worker stopped',
  )
  // Closing the queues twice is fine too (teardown closes them once more).
  await closeQueues(queues)
  await closeQueues(queues)
  t.pass('closed twice')
})

// main.ts registers the relay's stop before its start: a SIGTERM while the relay starts (waiting for
// its LISTEN connection) stops it then, and it must not send a batch after the shutdown began.
t.test('a stop while the relay is starting: its loop never runs, and a later relay sends the rows', async (t) => {
  const q = createQueues(producer, prefix)
  t.teardown(() => closeQueues(q))
  await post(callEvent({ natureCode: 'EDP' }))
  const waiting = await allUnsent()
  t.ok(waiting > 0, `rows waiting in the outbox (${waiting}), every earlier relay stopped`)

  const relay = newRelay(20, q)
  const starting = relay.start()
  await relay.stop()
  await starting
  // Well past the NOTIFY the row sent and the relay's first batch, had its loop run.
  await new Promise((r) => setTimeout(r, 500))
  t.equal(await allUnsent(), waiting, 'nothing sent by the relay stopped during its start')

  const next = newRelay(20, q)
  await next.start()
  await eventually(async () => (await allUnsent()) === 0, 5_000)
  t.pass('a relay started afterwards sends them')
  await next.stop()
})

// Not something main.ts does (it starts a relay once), but nothing stops a caller from it: the
// stop's loop must not carry on beside the new one, nor the stop close the new start's listener.
t.test('a start while a stop is under way waits for it: the stop ends, and the relay runs again and hears commits', async (t) => {
  await Promise.all(relays.map((r) => r.stop()))
  const relay = newRelay()
  await relay.start()
  const stopped = relay.stop()
  const started = relay.start()
  t.ok(await settlesWithin10s(stopped), 'the stop ends (its loop does not go on beside the new one)')
  t.ok(await settlesWithin10s(started), 'the start ends')
  const { decision } = await post(callEvent({ natureCode: 'EDP' }))
  const ids = decision.assignments.map((a) => a.id)
  const sent = await eventually(async () => (await unsentOf(ids)) === 0, 10_000).catch(() => false)
  t.ok(sent, `a commit afterwards is sent within 10 s: the relay listens (its poll is ${POLL_MS / 1000} s)`)
  t.ok(await settlesWithin10s(relay.stop()), 'and it stops again')
})

t.test('a stop asked for while a start waits for an earlier stop wins: nothing runs, nothing listens', async (t) => {
  await Promise.all(relays.map((r) => r.stop()))
  await eventually(async () => (await listeners()) === 0, 5_000)
  const relay = newRelay()
  await relay.start()
  void relay.stop()
  const started = relay.start()
  t.ok(await settlesWithin10s(relay.stop()), 'the last stop ends')
  t.ok(await settlesWithin10s(started), 'the start in between ends')
  const { decision } = await post(callEvent({ natureCode: 'EDP' }))
  await new Promise((r) => setTimeout(r, 1000))
  t.equal(await unsentOf(decision.assignments.map((a) => a.id)), decision.assignments.length, 'a commit afterwards stays unsent: no loop runs')
  t.equal(await listeners(), 0, 'and no LISTEN connection is left')
  // For the tests after this one: a relay that sends it.
  const next = newRelay()
  await next.start()
  await eventually(async () => (await allUnsent()) === 0, 10_000)
  await next.stop()
})

// After a Postgres outage the relay backs off up to 5 s between attempts. A commit proves Postgres
// answers again: the calls committed first after the outage must not wait out the whole backoff.
// The backoff doubles from 200 ms: the sixth failed attempt is followed by its 5 s ceiling.
const CEILING_AT = 6

/**
 * A relay whose queries go through a proxy, cut until the relay has failed CEILING_AT times (about
 * 6.5 s): it then waits 5 s. Its LISTEN connection and ingest reach Postgres directly. Every other
 * relay of this file is stopped first: only this one can send.
 */
async function relayAtCeiling(t: Test) {
  await Promise.all(relays.map((r) => r.stop()))
  const { proxy, url } = await proxyPostgres(t, databaseUrl)
  const relayDb = createDb(createPool({ connectionString: url, max: 2, statementTimeoutMs: 1000 }))
  t.teardown(() => relayDb.destroy())
  const { log, lines } = recordingLog<{ msg: string; failures?: number; afterFailures?: number }>()
  const relay = createOutboxRelay({ db: relayDb, databaseUrl, queues, log, pollMs: POLL_MS, batchSize: 20 })
  t.teardown(() => relay.stop())
  await proxy.cut()
  await relay.start()
  const failures = () => Math.max(0, ...lines.map((l) => l.failures ?? 0))
  await eventually(async () => failures() >= CEILING_AT, 30_000)
  /** How long after `since` every outbox row of these assignments was sent. */
  const sentAfter = (ids: string[], since: number) =>
    eventually(async () => (await unsentOf(ids)) === 0 && Math.round(performance.now() - since), 15_000)
  // The relay logs after its commit's answer, which may come a moment after the test sees the rows.
  const recovered = () => eventually(async () => lines.find((l) => l.msg === 'outbox relay recovered'), 5_000)
  return { proxy, failures, sentAfter, recovered }
}

t.test('backing off from Postgres, the relay sends soon after a commit shows Postgres answers again', async (t) => {
  const { proxy, sentAfter, recovered } = await relayAtCeiling(t)
  await proxy.restore()
  const { decision } = await post(callEvent({ natureCode: 'EDP' }))
  const ms = await sentAfter(decision.assignments.map((a) => a.id), performance.now())
  const r = await recovered()
  t.equal(r.afterFailures, CEILING_AT, `the relay was backing off for 5 s when the call committed (recovered after ${r.afterFailures} failures)`)
  // 4 s: short of the 5 s backoff, with room for a loaded machine; about 250 ms on a quiet one.
  t.ok(ms < 4000, `sent ${ms} ms after the commit, not at the end of the backoff`)
})

t.test('a commit while the failing attempt itself waits also brings the next one to 200 ms', async (t) => {
  const { proxy, failures, sentAfter, recovered } = await relayAtCeiling(t)
  // Postgres answers again, but not this relay: its next attempt meets a silent network and gives
  // up on the connection after 3 s. Meanwhile a call commits.
  await proxy.restore()
  proxy.freeze()
  await eventually(async () => proxy.silent() > 0, 10_000)
  const { decision } = await post(callEvent({ natureCode: 'EDP' }))
  t.equal(failures(), CEILING_AT, 'the call committed while that attempt still waited')
  await eventually(async () => failures() > CEILING_AT, 10_000)
  const failedAt = performance.now()
  proxy.thaw()
  const ms = await sentAfter(decision.assignments.map((a) => a.id), failedAt)
  const r = await recovered()
  t.equal(r.afterFailures, CEILING_AT + 1, `the commit came during the failed attempt (recovered after ${r.afterFailures} failures)`)
  t.ok(ms < 4000, `sent ${ms} ms after that attempt failed, not at the end of the 5 s backoff`)
})
