import { performance } from 'node:perf_hooks'
import { Worker } from 'bullmq'
import t from 'tap'
import { loadConfig } from '../../src/config.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { createQueues, jobIdFor, ASSIGNMENT_JOB_NAME } from '../../src/queue/queues.js'
import { createLifecycleQueue, SWEEP_SCHEDULER_ID } from '../../src/queue/lifecycle.js'
import { createRedis } from '../../src/queue/redis.js'
import { startLifecycleWorker } from '../../src/workers/lifecycle-worker.js'
import { createResponderWorkers } from '../../src/workers/responder-worker.js'
import { createWorld, eventually, quietLog, REDIS_URL } from '../helpers/world.js'
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
})

t.test('a transient error (Postgres unreachable) is retried with backoff, not failed', async (t) => {
  const created = await post({ natureCode: 'NOISE', agency: 'retry-pd' })
  const id = created.decision.assignments[0]!.id
  // A database that refuses connections, as during a failover.
  const down = createDb(createPool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1, statementTimeoutMs: 1000 }))
  const conn = createRedis(REDIS_URL, 'worker')
  const workers = createResponderWorkers({ db: down, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'] })
  workers.start()
  await queues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'retry-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  await eventually(async () => ((await queues.police.getJob(jobIdFor(id)))?.attemptsMade ?? 0) >= 2)
  const job = (await queues.police.getJob(jobIdFor(id)))!
  t.not(await job.getState(), 'failed', 'still to be retried')
  t.equal(job.opts.attempts, 10)
  t.same(job.opts.backoff, { type: 'exponential', delay: 500 })
  t.match(job.failedReason, /ECONNREFUSED|connect/)
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
  const holder = await world.pool.connect()
  await holder.query('begin')
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
  holder.release()

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

t.test('a job locked by a worker that is gone (killed, or never told it had it) runs again within the default lock + stalled interval', async (t) => {
  const config = loadConfig({})
  const bound = config.WORKER_LOCK_DURATION_MS + config.WORKER_STALLED_INTERVAL_MS
  t.ok(bound <= 15_000, `a lost hand-over waits at most ${bound} ms by default`)
  const created = await post({ natureCode: 'NOISE', agency: 'lost-pd' })
  const id = created.decision.assignments[0]!.id
  // Queues of their own: the stalled check runs once per interval per queue, and the workers of
  // the tests before left their 30 s one (BullMQ's default) on the file's queues.
  const own = `${prefix}:lost`
  const ownQueues = createQueues(producer, own)
  const police = ownQueues.police
  t.teardown(() => Promise.all(Object.values(ownQueues).map((q) => q.close())))
  await police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'lost-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  // A worker takes it and is never heard of again: the job is active under a lock nobody renews.
  const thiefConn = createRedis(REDIS_URL, 'worker')
  const thief = new Worker('police', undefined, { connection: thiefConn, prefix: own, autorun: false, lockDuration: config.WORKER_LOCK_DURATION_MS })
  const taken = await thief.getNextJob('lost-token')
  t.equal(taken?.id, jobIdFor(id))
  await thief.close()
  await thiefConn.quit()
  const takenAt = performance.now()

  const conn = createRedis(REDIS_URL, 'worker')
  const lock = { lockDurationMs: config.WORKER_LOCK_DURATION_MS, stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS }
  const workers = createResponderWorkers({ db, connection: conn, prefix: own, concurrency: 1, log: quietLog, queues: ['police'], ...lock })
  workers.start()
  t.teardown(async () => {
    await workers.close()
    await conn.quit()
  })
  t.equal(await police.getJobState(jobIdFor(id)), 'active', 'the job is active, and no worker runs it')
  await helpers(world).until(id, 'offered', bound + 5_000)
  const took = Math.round(performance.now() - takenAt)
  t.ok(took <= bound + 3_000, `offered ${took} ms after the lost hand-over`)
  t.equal((await police.getJob(jobIdFor(id)))?.stalledCounter, 1, 'as a stalled job')
})

t.test('a job Redis handed a worker without the worker hearing of it goes back to its queue when the connection returns', async (t) => {
  const created = await post({ natureCode: 'NOISE', agency: 'orphan-pd' })
  const id = created.decision.assignments[0]!.id
  const own = `${prefix}:orphan`
  const ownQueues = createQueues(producer, own)
  t.teardown(() => Promise.all(Object.values(ownQueues).map((q) => q.close())))
  const conn = createRedis(REDIS_URL, 'worker')
  const config = loadConfig({})
  const lock = { lockDurationMs: config.WORKER_LOCK_DURATION_MS, stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS }
  const workers = createResponderWorkers({ db, connection: conn, prefix: own, concurrency: 1, log: quietLog, queues: ['police'], ...lock })
  t.teardown(async () => {
    await workers.close()
    await conn.quit()
  })
  // Redis ran the worker's fetch (the job is active under the worker's token) and went away before
  // the answer reached it; the connection comes back.
  await ownQueues.police.add(ASSIGNMENT_JOB_NAME, { assignmentId: id, callId: created.callId, agency: 'orphan-pd', queue: 'police', role: 'primary' }, { jobId: jobIdFor(id) })
  const fetcherConn = createRedis(REDIS_URL, 'worker')
  const fetcher = new Worker('police', undefined, { connection: fetcherConn, prefix: own, autorun: false, lockDuration: config.WORKER_LOCK_DURATION_MS })
  t.equal((await fetcher.getNextJob(`${workers.workers[0]!.id}:7`))?.id, jobIdFor(id))
  await fetcher.close()
  await fetcherConn.quit()
  workers.start()
  const lostAt = performance.now()
  conn.disconnect(true)
  await helpers(world).until(id, 'offered', 5_000)
  const took = Math.round(performance.now() - lostAt)
  t.ok(took < config.WORKER_LOCK_DURATION_MS / 2, `offered ${took} ms after the connection dropped, long before its lock would lapse`)
  t.equal((await ownQueues.police.getJob(jobIdFor(id)))?.stalledCounter, 0, 'not as a stalled job')
})

t.test('the lifecycle worker is configured like the responder workers (retry delay after a Redis error, locks)', async (t) => {
  const conn = createRedis(REDIS_URL, 'worker')
  const lifecycleQueue = createLifecycleQueue(conn, prefix)
  const opts = { lockDurationMs: 12_000, stalledIntervalMs: 7_000 }
  const responders = createResponderWorkers({ db, connection: conn, prefix, concurrency: 1, log: quietLog, queues: ['police'], ...opts })
  const lifecycle = await startLifecycleWorker({ db, connection: conn, prefix, queue: lifecycleQueue, ackDeadlines: {}, sweepEveryMs: 600_000, log: quietLog, ...opts })
  const pick = (o: { runRetryDelay?: number; lockDuration?: number; stalledInterval?: number }) => ({ runRetryDelay: o.runRetryDelay, lockDuration: o.lockDuration, stalledInterval: o.stalledInterval })
  t.same(pick(lifecycle.worker.opts), pick(responders.workers[0]!.opts), 'same retry delay after a Redis error, lock duration and stalled check')
  t.same(pick(lifecycle.worker.opts), { runRetryDelay: 1000, lockDuration: 12_000, stalledInterval: 7_000 })
  await lifecycle.close()
  await responders.close()
  await lifecycleQueue.close()
  await conn.quit()
})

t.test('a sweep schedule that Redis lost (restarted empty) is put back by the lifecycle worker', async (t) => {
  const conn = createRedis(REDIS_URL, 'worker')
  const lifecycleQueue = createLifecycleQueue(conn, prefix)
  const lifecycle = await startLifecycleWorker({ db, connection: conn, prefix, queue: lifecycleQueue, ackDeadlines: {}, sweepEveryMs: 200, log: quietLog })
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
