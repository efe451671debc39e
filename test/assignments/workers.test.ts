import { performance } from 'node:perf_hooks'
import { Worker } from 'bullmq'
import t, { type Test as Tap } from 'tap'
import { loadConfig } from '../../src/config.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { createQueues, jobIdFor, ASSIGNMENT_JOB_NAME } from '../../src/queue/queues.js'
import { createLifecycleQueue, SWEEP_SCHEDULER_ID } from '../../src/queue/lifecycle.js'
import { createRedis } from '../../src/queue/redis.js'
import { createLifecycleWorker } from '../../src/workers/lifecycle-worker.js'
import { createResponderWorkers } from '../../src/workers/responder-worker.js'
import { createWorld, eventually, openTransaction, quietLog, REDIS_URL, running } from '../helpers/world.js'
import { helpers } from './fixtures/pipeline.js'

const world = await createWorld(t)
const { app, db, prefix } = world
const { post } = helpers(world)
const producer = createRedis(REDIS_URL, 'producer')
const queues = createQueues(producer, prefix)
t.teardown(async () => {
  await Promise.all(Object.values(queues).map((q) => q.close()))
  await producer.quit()
})

/** A worker that runs nothing by itself: it takes jobs when told (getNextJob), as a test needs. */
async function bareWorker(t: Tap, workerPrefix: string, lockDuration: number): Promise<Worker> {
  const connection = createRedis(REDIS_URL, 'worker')
  const w = new Worker('police', undefined, { connection, prefix: workerPrefix, autorun: false, lockDuration })
  t.teardown(async () => {
    await w.close()
    await connection.quit()
  })
  return w
}

t.test('the queue dashboard and the failed-jobs listing are for admin keys only', async (t) => {
  const supervisor = await world.key('supervisor')
  for (const url of ['/admin/queues', '/admin/queues/api/queues', '/admin/queues/static/js/main.4c9f061c66.js', '/v1/admin/failed-jobs']) {
    t.equal((await app.inject({ url, headers: { authorization: '' } })).statusCode, 401, `${url} without a key`)
    t.equal((await app.inject({ url, headers: { authorization: `Bearer ${supervisor}` } })).statusCode, 403, `${url} with a supervisor key`)
  }
  const page = await app.inject({ url: '/admin/queues' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /text\/html/)
  const api = await app.inject({ url: '/admin/queues/api/queues' })
  t.equal(api.statusCode, 200)
  t.same(
    (api.json().queues as { name: string }[]).map((q) => q.name).sort(),
    ['case_management', 'cru', 'ems', 'follow_up', 'lifecycle', 'police'],
  )
  // Its actions too (retry, clean…): a mutating route of the dashboard refuses a supervisor.
  const clean = await app.inject({ method: 'PUT', url: '/admin/queues/api/queues/police/clean/failed', headers: { authorization: `Bearer ${supervisor}` } })
  t.equal(clean.statusCode, 403)
})

t.test('an action taken on the queue dashboard is in the audit log; a look is not', async (t) => {
  const before = await db.selectFrom('audit_log').select('id').where('target_type', '=', 'queue').execute()
  t.equal((await app.inject({ url: '/admin/queues/api/queues' })).statusCode, 200)
  const clean = await app.inject({ method: 'PUT', url: '/admin/queues/api/queues/cru/clean/failed' })
  t.equal(clean.statusCode, 200)
  const records = await db.selectFrom('audit_log').select(['actor', 'role', 'action', 'target_id', 'request_id', 'details']).where('target_type', '=', 'queue').execute()
  t.equal(records.length, before.length + 1, 'one record: the clean, not the listing')
  t.match(records.at(-1), { actor: 'test-admin', role: 'admin', action: 'queue.admin', target_id: 'cru', request_id: clean.headers['x-request-id'], details: { method: 'PUT', route: '/admin/queues/api/queues/:queueName/clean/:queueStatus', params: { queueName: 'cru', queueStatus: 'failed' } } })
})

t.test('a bad job fails for good at once (UnrecoverableError) and is listed for admins', async (t) => {
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'] })
  workers.start()
  t.teardown(async () => {
    await workers.close()
    await conn.quit()
  })
  // Not a job the relay would write: malformed data must not be retried ten times.
  await queues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: 'not-a-uuid' } as never, { jobId: 'asg-bad-job' })
  await eventually(async () => (await queues.police.getJobState('asg-bad-job')) === 'failed')
  const job = await queues.police.getJob('asg-bad-job')
  t.equal(job?.attemptsMade, 1, 'no retries for a bad job')
  const res = await app.inject({ url: '/v1/admin/failed-jobs?queue=police' })
  t.equal(res.statusCode, 200)
  const item = res.json().items.find((i: { jobId: string }) => i.jobId === 'asg-bad-job')
  t.match(item, { queue: 'police', name: ASSIGNMENT_JOB_NAME, failedReason: /malformed data/, attemptsMade: 1 })
  t.equal(res.json().counts.police, 1)
  // A misspelt queue is a 400 naming it, as in the assignment listing, not an empty answer.
  const bogus = await app.inject({ url: '/v1/admin/failed-jobs?queue=polise' })
  t.equal(bogus.statusCode, 400)
  t.match(bogus.json().invalidParams, [{ name: 'querystring.queue' }])
})

t.test('Postgres unreachable: the job is tried again a second later, using no attempt, never failed', async (t) => {
  const created = await post({ natureCode: 'NOISE', agency: 'retry-pd' })
  const id = created.decision.assignments[0]!.id
  // A database that refuses connections, as during a failover.
  const down = createDb(createPool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1, statementTimeoutMs: 1000 }))
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db: down, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'] })
  workers.start()
  await queues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'retry-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  // Delayed, tried again (processedOn moves), delayed again: no attempt used and nothing failed.
  const first = await eventually(async () => (await queues.police.getJobState(jobIdFor(id))) === 'delayed' && (await queues.police.getJob(jobIdFor(id)))?.processedOn)
  await eventually(async () => {
    const j = await queues.police.getJob(jobIdFor(id))
    return j !== undefined && (j.processedOn ?? 0) > first && (await j.getState()) === 'delayed'
  })
  const job = (await queues.police.getJob(jobIdFor(id)))!
  t.not(await job.getState(), 'failed', 'still to be retried')
  t.equal(job.attemptsMade, 0, 'no attempt used on the outage')
  // Its attempts, with the doubling backoff, are left for other errors.
  t.equal(job.opts.attempts, 10)
  t.same(job.opts.backoff, { type: 'exponential', delay: 500 })
  await workers.close()
  await conn.quit()
  await down.destroy()

  // Postgres is back (another worker with a working pool): the same job offers the assignment.
  const conn2 = createRedis(REDIS_URL, 'worker')
  const next = createResponderWorkers({ db, connection: conn2, prefix, concurrency: 1, log: quietLog, queues: ['police'] })
  next.start()
  await helpers(world).until(id, 'offered')
  await next.close()
  await conn2.quit()
})

t.test('per-queue concurrency from config', async (t) => {
  const config = loadConfig({ WORKER_CONCURRENCY: '8', WORKER_CONCURRENCY_PER_QUEUE: 'police=16, cru=2' })
  t.same(config.WORKER_CONCURRENCY_PER_QUEUE, { police: 16, cru: 2 })
  t.throws(() => loadConfig({ ACK_DEADLINES: 'police=soon' }), /ACK_DEADLINES: "police=soon"/)
  t.throws(() => loadConfig({ ACK_DEADLINES: 'dispatch=30' }), /ACK_DEADLINES/)
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db, connection: conn, prefix, concurrency: config.WORKER_CONCURRENCY, concurrencyPerQueue: config.WORKER_CONCURRENCY_PER_QUEUE, log: quietLog })
  t.same(Object.fromEntries(workers.workers.map((w) => [w.name, w.concurrency])), { police: 16, cru: 2, ems: 8, case_management: 8, follow_up: 8 })
  await workers.close()
  await conn.quit()
})

t.test('shutdown: a job stuck past the drain time is handed back to its queue, within a bounded time', async (t) => {
  const created = await post({ natureCode: 'NOISE', agency: 'drain-pd' })
  const id = created.decision.assignments[0]!.id
  // Hold the assignment's row: the worker's offer blocks on it, as on a slow database.
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from assignments where id = $1 for update', [id])
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'], drainMs: 300 })
  workers.start()
  await queues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'drain-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  await eventually(async () => (await queues.police.getJobState(jobIdFor(id))) === 'active')
  const started = Date.now()
  await Promise.all([workers.close(), workers.close()]) // twice: both wait for the same stop
  const took = Date.now() - started
  t.ok(took < 3000, `closed in ${took} ms`)
  t.equal(await queues.police.getJobState(jobIdFor(id)), 'waiting', 'the job is back in its queue for another worker')
  await holder.query('rollback')

  // Another worker takes it and offers the assignment.
  const conn2 = createRedis(REDIS_URL, 'worker')
  const next = createResponderWorkers({ db, connection: conn2, prefix, concurrency: 1, log: quietLog, queues: ['police'] })
  next.start()
  await helpers(world).until(id, 'offered')
  await next.close()
  await conn2.quit()
  // Only now: the handed-back job's processor was still waiting on the row and finishes after the
  // rollback; BullMQ then reports its outcome on this connection (and is told the job is no longer
  // its own). Closing the connection under it rejected that call with nobody listening.
  await conn.quit()
})

t.test('a job locked by a worker that is gone runs again once its lock lapses, as a stalled job', async (t) => {
  const config = loadConfig({})
  t.ok(config.WORKER_LOCK_DURATION_MS + config.WORKER_STALLED_INTERVAL_MS <= 15_000, 'by default within 15 s')
  const lock = { lockDurationMs: 2000, stalledIntervalMs: 500 }
  const created = await post({ natureCode: 'NOISE', agency: 'lost-pd' })
  const id = created.decision.assignments[0]!.id
  // Queues of their own: the stalled check runs once per interval per queue, and the workers of
  // the tests before left their 30 s one (BullMQ's default) on the file's queues.
  const ownQueues = createQueues(producer, `${prefix}:lost`)
  t.teardown(() => Promise.all(Object.values(ownQueues).map((q) => q.close())))
  await ownQueues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'lost-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  // A worker takes it and is never heard of again: the job is active under a lock nobody renews.
  const gone = await bareWorker(t, `${prefix}:lost`, lock.lockDurationMs)
  t.equal((await gone.getNextJob('gone-worker:1'))?.id, jobIdFor(id))
  const takenAt = performance.now()

  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db, connection: conn, prefix: `${prefix}:lost`, concurrency: 1, log: quietLog, queues: ['police'], ...lock })
  workers.start()
  t.teardown(async () => {
    await workers.close()
    await conn.quit()
  })
  t.equal(await ownQueues.police.getJobState(jobIdFor(id)), 'active', 'the job is active, and no worker runs it')
  t.equal(await workers.sweepOrphans(), 0, "not this worker's: the hand-over sweep leaves it alone")
  await helpers(world).until(id, 'offered', 10_000)
  const took = Math.round(performance.now() - takenAt)
  t.ok(took >= lock.lockDurationMs - 100, `offered ${took} ms after, once the lock had lapsed`)
  t.equal((await ownQueues.police.getJob(jobIdFor(id)))?.stalledCounter, 1, 'as a stalled job')
})

t.test('a job Redis handed a worker without the worker hearing of it goes back to its queue when the connection returns', async (t) => {
  const config = loadConfig({})
  const lock = { lockDurationMs: config.WORKER_LOCK_DURATION_MS, stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS }
  const own = `${prefix}:orphan`
  const ownQueues = createQueues(producer, own)
  t.teardown(() => Promise.all(Object.values(ownQueues).map((q) => q.close())))
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db, connection: conn, prefix: own, concurrency: 1, log: quietLog, queues: ['police'], ...lock })
  t.teardown(async () => {
    await workers.close()
    await conn.quit()
  })
  const worker = workers.workers[0]!

  // The token form the sweep relies on: a job this worker runs is locked with "<worker id>:<n>".
  const first = await post({ natureCode: 'NOISE', agency: 'orphan-pd' })
  const firstId = first.decision.assignments[0]!.id
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from assignments where id = $1 for update', [firstId]) // holds the offer mid-job
  workers.start()
  await ownQueues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: firstId, callId: first.callId, agency: 'orphan-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(firstId) })
  await eventually(async () => (await ownQueues.police.getJobState(jobIdFor(firstId))) === 'active')
  const token = await producer.get(`${own}:police:${jobIdFor(firstId)}:lock`)
  t.match(token, new RegExp(`^${worker.id}:\\d+$`), "the lock of a running job holds the worker's token")
  t.equal(await workers.sweepOrphans(), 0, 'a job the worker runs is not handed back')
  t.equal(await ownQueues.police.getJobState(jobIdFor(firstId)), 'active')
  await holder.query('rollback')
  await helpers(world).until(firstId, 'offered')

  // Redis ran the worker's fetch (the job is active under the worker's token) and went away before
  // the answer reached it; the connection comes back.
  const created = await post({ natureCode: 'NOISE', agency: 'orphan-pd' })
  const id = created.decision.assignments[0]!.id
  await workers.close() // takes nothing more; the watch below is the one under test
  const conn2 = createRedis(REDIS_URL, 'worker')
  const again = createResponderWorkers({ db, connection: conn2, prefix: own, concurrency: 1, log: quietLog, queues: ['police'], ...lock })
  t.teardown(async () => {
    await again.close()
    await conn2.quit()
  })
  await ownQueues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'orphan-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  const fetcher = await bareWorker(t, own, lock.lockDurationMs)
  t.equal((await fetcher.getNextJob(`${again.workers[0]!.id}:7`))?.id, jobIdFor(id))
  await eventually(async () => conn2.status === 'ready')
  again.start()
  const lostAt = performance.now()
  conn2.disconnect(true)
  await helpers(world).until(id, 'offered', 6_000)
  const took = Math.round(performance.now() - lostAt)
  t.ok(took < lock.lockDurationMs / 2, `offered ${took} ms after the connection dropped, long before its lock would lapse`)
  t.equal((await ownQueues.police.getJob(jobIdFor(id)))?.stalledCounter, 0, 'not as a stalled job')
})

t.test('the lifecycle worker is configured like the responder workers (retry delay after a Redis error, locks)', async (t) => {
  const conn = createRedis(REDIS_URL, 'worker')
  const lifecycleQueue = createLifecycleQueue(conn, prefix)
  const opts = { lockDurationMs: 12_000, stalledIntervalMs: 7_000 }
  const responders = createResponderWorkers({ db, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'], ...opts })
  const lifecycle = await running(createLifecycleWorker({ db, connection: conn, prefix, queue: lifecycleQueue, ackDeadlines: {}, sweepEveryMs: 600_000, log: quietLog, ...opts }))
  const pick = (o: { runRetryDelay?: number; lockDuration?: number; stalledInterval?: number; maxStalledCount?: number }) => ({
    runRetryDelay: o.runRetryDelay,
    lockDuration: o.lockDuration,
    stalledInterval: o.stalledInterval,
    maxStalledCount: o.maxStalledCount,
  })
  t.same(pick(lifecycle.worker.opts), pick(responders.workers[0]!.opts), 'same retry delay after a Redis error, lock duration, stalled check and stalls allowed')
  t.same(pick(lifecycle.worker.opts), { runRetryDelay: 1000, lockDuration: 12_000, stalledInterval: 7_000, maxStalledCount: 3 })
  await lifecycle.close()
  await responders.close()
  await lifecycleQueue.close()
  await conn.quit()
})

t.test('a sweep schedule that Redis lost (restarted empty) is put back by the lifecycle worker', async (t) => {
  const conn = createRedis(REDIS_URL, 'worker')
  const lifecycleQueue = createLifecycleQueue(conn, prefix)
  const lifecycle = await running(createLifecycleWorker({ db, connection: conn, prefix, queue: lifecycleQueue, ackDeadlines: {}, sweepEveryMs: 200, log: quietLog }))
  t.ok(await lifecycleQueue.getJobScheduler(SWEEP_SCHEDULER_ID), 'scheduled at start')
  await lifecycleQueue.removeJobScheduler(SWEEP_SCHEDULER_ID)
  t.notOk(await lifecycleQueue.getJobScheduler(SWEEP_SCHEDULER_ID), 'gone, as after a Redis that came back empty')
  let back = false
  for (let i = 0; i < 50 && !back; i++) {
    await new Promise((r) => setTimeout(r, 100))
    back = (await lifecycleQueue.getJobScheduler(SWEEP_SCHEDULER_ID)) !== undefined
  }
  t.ok(back, 'restored within a few sweep intervals')
  await lifecycle.close()
  await lifecycleQueue.close()
  await conn.quit()
})
