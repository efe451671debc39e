import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { Db } from '../db/connect.js'
import { OVERDUE_ACTOR, escalateAssignment, markOverdue } from '../assignments/escalation.js'
import { OPEN_STATUSES, UNACKNOWLEDGED_STATUSES } from '../assignments/state-machine.js'
import { isRefusedByPostgres } from '../http/errors.js'
import { ACK_DEADLINE_JOB, FOLLOW_UP_OVERDUE_JOB, LIFECYCLE_QUEUE, SWEEP_JOB, SWEEP_SCHEDULER_ID, ackDeadlineJobSchema, type LifecycleJob, type LifecycleQueue } from '../queue/lifecycle.js'
import type { QueueName } from '../routing/index.js'
import { MAX_STALLED_COUNT, WORKER_ERROR_LOG_EVERY_MS, drainOrReturn, drainUntil, inFlight, inFlightJobs, offerNow } from './responder-worker.js'
import { throttledWarn } from '../lib/log-throttle.js'
import { failedMessage, keepScheduled, restoredMessage } from '../queue/schedules.js'
import { watchForOrphans } from './orphans.js'
import { waitingOutUnavailable } from './unavailable.js'

export interface LifecycleWorkerDeps {
  db: Db
  connection: Redis
  prefix: string
  /** The same queue the responder workers schedule deadlines on (re-offers schedule theirs). */
  queue: LifecycleQueue
  ackDeadlines: Partial<Record<QueueName, number>>
  sweepEveryMs: number
  log: FastifyBaseLogger
  concurrency?: number
  drainMs?: number
  /** As for the responder workers (WORKER_LOCK_DURATION_MS, WORKER_STALLED_INTERVAL_MS); BullMQ's 30 s when not given. */
  lockDurationMs?: number
  stalledIntervalMs?: number
}

const SWEEP_BATCH = 200
/** The sweep leaves a deadline job this long to do its work first. */
const SWEEP_GRACE_MS = 2_000

export const DEADLINE_ACTOR = 'system:ack-deadline'
export const SWEEP_ACTOR = 'system:lifecycle-sweep'

/** A deadline job: escalate unless acknowledged; a job that fires early waits for the stored deadline. */
export async function runAckDeadline(db: Db, job: Pick<Job<unknown>, 'id' | 'data'>): Promise<'escalated' | 'moved-on' | { notBefore: Date }> {
  const parsed = ackDeadlineJobSchema.safeParse(job.data)
  if (!parsed.success) throw new UnrecoverableError(`job ${job.id} has malformed data`)
  let result
  try {
    result = await escalateAssignment(db, parsed.data.assignmentId, { kind: 'deadline', actor: DEADLINE_ACTOR })
  } catch (err) {
    if ((err as { code?: string }).code === 'not-found') throw new UnrecoverableError(`job ${job.id}: no such assignment`)
    throw err
  }
  if (result.skipped === 'not-due' && result.view.ackDeadlineAt) return { notBefore: new Date(result.view.ackDeadlineAt) }
  return result.changed ? 'escalated' : 'moved-on'
}

/**
 * The safety net behind the delayed jobs: escalates offered assignments past their deadline and
 * offers reserved follow-ups whose time has come, from what Postgres says. Catches what Redis lost
 * (a flushed or restored Redis) — in normal operation the delayed jobs got there first.
 */
export async function sweep(
  db: Db,
  queue: LifecycleQueue | undefined,
  ackDeadlines: Partial<Record<QueueName, number>>,
  now = new Date(),
): Promise<{ escalated: number; offered: number; overdue: number; failed: number }> {
  const before = new Date(now.getTime() - SWEEP_GRACE_MS)
  // One assignment that Postgres refuses now (its call's row held by a session left open: a lock or
  // statement time-out, a deadlock) must not stop the sweep doing the rest: it is counted and left
  // for the next sweep. Anything else (Postgres unreachable, a bug) fails the sweep as before, rather
  // than waiting out a connection time-out for each of the rest.
  let failed = 0
  const each = async (work: () => Promise<boolean>): Promise<boolean> => {
    try {
      return await work()
    } catch (err) {
      if (!isRefusedByPostgres(err)) throw err
      failed++
      return false
    }
  }
  const unacknowledged = await db
    .selectFrom('assignments')
    .select('id')
    .where('status', 'in', UNACKNOWLEDGED_STATUSES)
    .where('ack_deadline_at', '<', before)
    .orderBy('ack_deadline_at')
    .limit(SWEEP_BATCH)
    .execute()
  let escalated = 0
  for (const { id } of unacknowledged) {
    if (await each(async () => (await escalateAssignment(db, id, { kind: 'deadline', actor: SWEEP_ACTOR }, { now })).changed)) escalated++
  }
  const due = await db.selectFrom('assignments').select(['id', 'queue']).where('status', '=', 'reserved').where('reserved_until', '<', before).orderBy('reserved_until').limit(SWEEP_BATCH).execute()
  let offered = 0
  for (const a of due) {
    if (await each(async () => (await offerNow(db, a.id, a.queue as QueueName, { lifecycle: queue, ackDeadlines, now: () => now })) === 'offered')) offered++
  }
  const late = await db
    .selectFrom('assignments as a')
    .select('a.id')
    .where('a.queue', '=', 'follow_up')
    .where('a.status', 'in', OPEN_STATUSES)
    .where('a.due_at', '<', before)
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('assignment_transitions as t').select('t.id').whereRef('t.assignment_id', '=', 'a.id').where('t.actor', '=', OVERDUE_ACTOR))))
    .limit(SWEEP_BATCH)
    .execute()
  let overdue = 0
  for (const { id } of late) if (await each(async () => (await markOverdue(db, id, now)) === true)) overdue++
  return { escalated, offered, overdue, failed }
}

/**
 * The lifecycle worker with its sweep scheduled, taking no jobs until start(): src/main.ts starts
 * its workers together, once no shutdown can have begun without them.
 */
export async function createLifecycleWorker(deps: LifecycleWorkerDeps) {
  const jobs = inFlightJobs()
  const errorWarn = throttledWarn(deps.log, WORKER_ERROR_LOG_EVERY_MS)
  const worker = new Worker<LifecycleJob, unknown, string>(
    LIFECYCLE_QUEUE,
    (job, token) =>
      inFlight(jobs, job.id ?? '', job, token, () =>
        // A deadline or overdue check that meets an unavailable Postgres or Redis tries again in a
        // second, using no attempt, as the responder workers' jobs do: an escalation is due when
        // Postgres returns, not up to as long again later. The sweep does not wait: its scheduler
        // has already added the next run, due within one interval, and sweeps waiting out an
        // outage would pile up, one an interval, to run side by side when it ends.
        job.name === SWEEP_JOB
          ? processLifecycleJob(deps, job, token)
          : waitingOutUnavailable(
              job,
              token,
              jobs,
              (err) => errorWarn('job waiting: unavailable', { queue: LIFECYCLE_QUEUE, jobId: job.id, err: { message: err.message } }, 'lifecycle job waiting for Postgres or Redis'),
              () => processLifecycleJob(deps, job, token),
            ),
      ),
    {
      connection: deps.connection,
      prefix: deps.prefix,
      concurrency: deps.concurrency ?? 4,
      autorun: false,
      // As the responder workers: after a Redis connection error, fetch again within a second, not 15 s.
      runRetryDelay: 1000,
      maxStalledCount: MAX_STALLED_COUNT,
      ...(deps.lockDurationMs ? { lockDuration: deps.lockDurationMs } : {}),
      ...(deps.stalledIntervalMs ? { stalledInterval: deps.stalledIntervalMs } : {}),
    },
  )
  worker.on('error', (err) => errorWarn(err.message, { queue: LIFECYCLE_QUEUE, err: { message: err.message } }, 'worker error'))
  worker.on('failed', (job, err) => deps.log.warn({ queue: LIFECYCLE_QUEUE, jobId: job?.id, attemptsMade: job?.attemptsMade, err: { message: err.message } }, 'lifecycle job failed'))
  worker.on('stalled', (jobId) => deps.log.warn({ queue: LIFECYCLE_QUEUE, jobId }, 'lifecycle job stalled (its lock lapsed): handed out again'))
  const orphans = watchForOrphans(worker, deps.connection, (jobId) => jobs.active.has(jobId), deps.log)
  // One schedule however many workers run; it lives in Redis, so it survives restarts of ours.
  // A Redis that comes back empty has lost the schedule with the deadline jobs it stands behind: it
  // is put back, so the sweep catches up on them; so is a schedule whose next run was lost.
  const stopWatchdog = await keepScheduled(
    deps.queue,
    SWEEP_SCHEDULER_ID,
    // One attempt: a failed sweep's retry is the next sweep, due within one interval. The queue's
    // ten attempts with doubling backoff kept each sweep that met an outage retrying for minutes
    // beside the newer ones, one more an interval, to run side by side when it ended.
    () => deps.queue.upsertJobScheduler(SWEEP_SCHEDULER_ID, { every: deps.sweepEveryMs }, { name: SWEEP_JOB, data: {}, opts: { removeOnComplete: 100, removeOnFail: 100, attempts: 1 } }),
    {
      checkEveryMs: deps.sweepEveryMs,
      onRestored: (lost) => deps.log.warn({ queue: LIFECYCLE_QUEUE }, restoredMessage('the lifecycle sweep', lost)),
      onFailed: (err) => deps.log.warn({ queue: LIFECYCLE_QUEUE, err: { message: err.message } }, failedMessage('the lifecycle sweep')),
    },
  )
  let closing: Promise<void> | undefined
  return {
    worker,
    start(): void {
      void worker.run().catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'lifecycle worker stopped'))
    },
    /** Bounded like the responder workers: what does not finish by `until` goes back to the queue. */
    close(until = drainUntil(deps.drainMs)): Promise<void> {
      stopWatchdog()
      orphans.stop()
      closing ??= drainOrReturn([worker], jobs, until, deps.log)
      return closing
    },
  }
}

async function processLifecycleJob(deps: LifecycleWorkerDeps, job: Job<LifecycleJob, unknown, string>, token: string | undefined): Promise<unknown> {
  if (job.name === SWEEP_JOB) {
    const r = await sweep(deps.db, deps.queue, deps.ackDeadlines)
    if (r.escalated || r.offered || r.overdue) deps.log.warn(r, 'lifecycle sweep caught up with work the deadline jobs had not done')
    if (r.failed) deps.log.warn({ queue: LIFECYCLE_QUEUE, failed: r.failed }, 'lifecycle sweep could not handle some assignments now; the next sweep tries again')
    return r
  }
  if (job.name === FOLLOW_UP_OVERDUE_JOB) {
    const parsed = ackDeadlineJobSchema.safeParse(job.data)
    if (!parsed.success) throw new UnrecoverableError(`job ${job.id} has malformed data`)
    const marked = await markOverdue(deps.db, parsed.data.assignmentId)
    if (marked === 'not-due') {
      const row = await deps.db.selectFrom('assignments').select('due_at').where('id', '=', parsed.data.assignmentId).executeTakeFirstOrThrow()
      await job.moveToDelayed(row.due_at!.getTime(), token)
      throw new DelayedError()
    }
    return marked ? 'overdue' : 'done-in-time'
  }
  if (job.name !== ACK_DEADLINE_JOB) throw new UnrecoverableError(`unknown lifecycle job ${job.name}`)
  const outcome = await runAckDeadline(deps.db, job)
  if (typeof outcome === 'object') {
    // Fired early (clocks disagree): wait for the stored deadline.
    await job.moveToDelayed(outcome.notBefore.getTime(), token)
    throw new DelayedError()
  }
  deps.log.info({ jobId: job.id, outcome }, 'acknowledgement deadline reached')
  return outcome
}

export type LifecycleWorker = Awaited<ReturnType<typeof createLifecycleWorker>>
