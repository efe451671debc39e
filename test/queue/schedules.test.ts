/**
 * keepScheduled (src/queue/schedules.ts) keeps a BullMQ job scheduler running: it puts back a
 * scheduler whose record Redis lost (test/assignments/workers.test.ts, test/retention/scrub.test.ts)
 * and, here, one whose record stayed while the job of its next run was lost — BullMQ then never runs
 * it again. A scheduler that is merely not being run (no worker up) is left as it is.
 */
import { Writable } from 'node:stream'
import { performance } from 'node:perf_hooks'
import { Queue, type JobSchedulerJson } from 'bullmq'
import { Redis } from 'ioredis'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createLifecycleQueue, SWEEP_JOB, SWEEP_SCHEDULER_ID } from '../../src/queue/lifecycle.js'
import { closeRedis, createRedis } from '../../src/queue/redis.js'
import { keepScheduled } from '../../src/queue/schedules.js'
import { createLifecycleWorker } from '../../src/workers/lifecycle-worker.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, eventually, running, say } from '../helpers/world.js'

const world = await createWorld(t)
const { db, prefix, config } = world
const redis = createRedis(config.REDIS_URL, 'producer')
t.teardown(() => closeRedis(redis))

/**
 * Takes the job of the scheduler's next run away while it is still waiting (delayed), keeping the
 * scheduler's record: as a Redis that lost some keys, or a worker that ran a run and could not add
 * the next (BullMQ gives up on that after an error other than a lost connection, e.g. a full Redis
 * refusing writes). In one script, so the run is never taken away from a worker already running it.
 * Returns the lost run's due time, or 0 when the run was not delayed just then.
 */
const LOSE_NEXT_RUN = `
local next = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not next then return 0 end
local id = 'repeat:' .. ARGV[1] .. ':' .. next
if redis.call('ZREM', KEYS[2], id) == 0 then return 0 end
redis.call('DEL', ARGV[2] .. id)
return tonumber(next)
`
async function loseNextRun(queuePrefix: string, queueName: string, schedulerId: string): Promise<number> {
  const base = `${queuePrefix}:${queueName}:`
  return Number(await redis.eval(LOSE_NEXT_RUN, 2, `${base}repeat`, `${base}delayed`, schedulerId, base))
}

/** A lifecycle worker (and its sweep's schedule) on this Redis, its log lines kept; closed at teardown. */
async function lifecycleOn(t: Test, redisUrl: string, sweepEveryMs: number) {
  const connection = createRedis(redisUrl, 'worker')
  const queue = createLifecycleQueue(connection, prefix)
  const lines: string[] = []
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, cb) => void (lines.push(String(chunk)), cb()) }))
  const lifecycle = await running(createLifecycleWorker({ db, connection, prefix, queue, ackDeadlines: {}, sweepEveryMs, log }))
  t.teardown(async () => {
    await lifecycle.close()
    await queue.close()
    await closeRedis(connection)
  })
  return { queue, lines }
}

/** A queue's checks for keepScheduled, counted, so a test can wait for several of them rather than for a time. */
function countingChecks(queue: Queue) {
  const counted = {
    checks: 0,
    getJobScheduler: (id: string) => {
      counted.checks++
      return queue.getJobScheduler(id)
    },
    getJobState: (id: string) => queue.getJobState(id),
  }
  return counted
}

/** A Redis of the test's own that refuses writes (full under noeviction) until `admin` sets maxmemory 0. */
async function refusingRedis(t: Test) {
  const server = await startRedisServer(t)
  const admin = new Redis(server.url)
  t.teardown(() => admin.quit())
  await admin.config('SET', 'maxmemory-policy', 'noeviction')
  await admin.config('SET', 'maxmemory', '1')
  return { server, admin }
}

t.test('a sweep whose next run Redis lost (its schedule kept) runs again within a few intervals', async (t) => {
  const EVERY_MS = 1000
  const { queue, lines } = await lifecycleOn(t, config.REDIS_URL, EVERY_MS)
  const sweepsAfter = async (ms: number) => (await queue.getJobs(['completed'])).filter((j) => j.name === SWEEP_JOB && (j.finishedOn ?? 0) > ms).length
  const sweptAfter = async (ms: number) => (await sweepsAfter(ms)) > 0
  await eventually(() => sweptAfter(0), 10_000)
  t.equal((await queue.getJobScheduler(SWEEP_SCHEDULER_ID))?.template?.opts?.attempts, 1, 'a failed sweep is not retried: the next sweep is its retry')

  // BullMQ (5.81) spares a scheduler's next run from the dashboard's drain: it is not how it gets lost here.
  await queue.drain(true)
  const { next } = (await queue.getJobScheduler(SWEEP_SCHEDULER_ID))!
  t.not(await queue.getJobState(`repeat:${SWEEP_SCHEDULER_ID}:${next}`), 'unknown', 'a drain keeps the next run')

  const lost = await eventually(() => loseNextRun(prefix, queue.name, SWEEP_SCHEDULER_ID), 10_000)
  const lostAt = Date.now()
  const lostAtMono = performance.now()
  t.ok(await queue.getJobScheduler(SWEEP_SCHEDULER_ID), 'the schedule is still there')
  t.equal(await queue.getJobState(`repeat:${SWEEP_SCHEDULER_ID}:${lost}`), 'unknown', 'its next run is gone')
  await eventually(() => sweptAfter(lostAt), 4 * EVERY_MS)
  const ms = Math.round(performance.now() - lostAtMono)
  say(`queue/schedules: the sweep ran again ${ms} ms after its next run was lost (every ${EVERY_MS} ms)`)
  const rerunAt = Date.now()
  t.ok(lines.some((l) => l.includes('the lifecycle sweep was not going to run again')), 'logged as a warning')
  // Then on as before: one run at a time, and no check puts it back again.
  await eventually(async () => (await sweepsAfter(rerunAt)) >= 2, 6 * EVERY_MS)
  t.ok((await queue.getJobs(['delayed', 'waiting', 'prioritized'])).filter((j) => j.name === SWEEP_JOB).length <= 1, 'no second run waiting')
  t.equal(lines.filter((l) => l.includes('lifecycle sweep')).length, 1, 'put back once')
})

t.test('a schedule nobody runs (no worker up) is left alone however late its next run', async (t) => {
  const EVERY_MS = 200
  // The file's own prefix (a queue of its own name): the world deletes its keys at teardown.
  const queue = new Queue('idle', { connection: redis, prefix })
  queue.on('error', () => {})
  const upsert = () => queue.upsertJobScheduler('idle-sweep', { every: EVERY_MS }, { name: 'sweep', data: {} })
  const counted = countingChecks(queue)
  const restored: string[] = []
  const stop = await keepScheduled(counted, 'idle-sweep', upsert, { checkEveryMs: EVERY_MS, onRestored: (what) => restored.push(what), onFailed: (err) => t.fail(err.message) })
  t.teardown(async () => {
    stop()
    await queue.close()
  })
  const first = (await queue.getJobScheduler('idle-sweep')) as JobSchedulerJson
  const runs = async () => (await queue.getJobs(['delayed', 'waiting', 'prioritized'])).map((j) => j.id)
  const runsAtFirst = await runs()
  t.same(runsAtFirst, [`repeat:idle-sweep:${first.next}`], 'one run waiting')
  // Overdue by several intervals, and checked again after that.
  await eventually(async () => Date.now() > first.next! + 5 * EVERY_MS, 10_000, EVERY_MS)
  const seen = counted.checks
  await eventually(async () => counted.checks >= seen + 3, 10_000)
  t.same(restored, [], 'never put back')
  t.equal((await queue.getJobScheduler('idle-sweep'))?.next, first.next, 'the next run has not moved')
  t.same(await runs(), runsAtFirst, 'the same one run waiting, no other')
})

t.test('a Redis that refuses writes at start (full under noeviction) does not stop the worker starting; the sweep is scheduled once Redis takes writes', async (t) => {
  const EVERY_MS = 500
  // A Redis of its own: the shared one must keep taking the other files' writes.
  const { server, admin } = await refusingRedis(t)
  const { queue, lines } = await lifecycleOn(t, server.url, EVERY_MS)
  t.ok(lines.some((l) => l.includes('the lifecycle sweep schedule could not be written to Redis') && l.includes('OOM')), 'started, and said why the schedule is missing')
  t.notOk(await queue.getJobScheduler(SWEEP_SCHEDULER_ID), 'no schedule while Redis refuses writes')
  await admin.config('SET', 'maxmemory', '0')
  // A check, the worker's next fetch (within a second of its errors) and a sweep: roomy for a loaded machine.
  await eventually(async () => (await queue.getJobs(['completed'])).some((j) => j.name === SWEEP_JOB), 30 * EVERY_MS)
  t.ok(lines.some((l) => l.includes('the lifecycle sweep schedule is written to Redis, which had refused it')), 'the check wrote it once Redis took writes, and the sweep ran')
})

t.test('while Redis refuses the schedule, the checks say so again now and then, not at every check', async (t) => {
  const { server, admin } = await refusingRedis(t)
  const connection = createRedis(server.url, 'worker')
  const queue = new Queue('refused', { connection, prefix })
  queue.on('error', () => {})
  const counted = countingChecks(queue)
  const failures: string[] = []
  const restored: string[] = []
  const stop = await keepScheduled(counted, 'refused-sweep', () => queue.upsertJobScheduler('refused-sweep', { every: 60_000 }, { name: 'sweep', data: {} }), {
    checkEveryMs: 100,
    reportEveryMs: 1000,
    onRestored: (what) => restored.push(what),
    onFailed: (err) => failures.push(err.message),
  })
  t.teardown(async () => {
    stop()
    await queue.close()
    await closeRedis(connection)
  })
  t.equal(failures.length, 1, 'said at start')
  const started = performance.now()
  // Twenty checks and more, each refused, over two report intervals and a bit.
  await eventually(async () => counted.checks >= 20 && performance.now() - started > 2200, 15_000)
  t.ok(failures.length >= 2, `said again: ${failures.length} times over ${counted.checks} checks`)
  t.ok(failures.length < counted.checks / 3, 'not at every check')
  t.ok(failures.every((m) => m.includes('OOM')), 'with Redis\'s own reason')
  await admin.config('SET', 'maxmemory', '0')
  await eventually(async () => restored.length > 0, 5000)
  t.same(restored, ['unwritten'], 'written at last, and said so as such')
  t.ok(await queue.getJobScheduler('refused-sweep'), 'the schedule is in Redis')
})
