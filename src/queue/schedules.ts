import { performance } from 'node:perf_hooks'
import type { JobSchedulerJson, Queue } from 'bullmq'

/**
 * What keepScheduled found lost: the scheduler itself, or (its record kept) the job of its next run;
 * or it wrote the scheduler at last, Redis having refused it at start.
 */
export type LostSchedule = 'scheduler' | 'next-run' | 'unwritten'

/** The warning a restore is logged with, in the words of `what` ("the lifecycle sweep"): the same for every schedule. */
export function restoredMessage(what: string, lost: LostSchedule): string {
  if (lost === 'unwritten') return `${what} schedule is written to Redis, which had refused it`
  return lost === 'scheduler'
    ? `${what} schedule was missing from Redis; restored`
    : `${what} was not going to run again (the job of its next run was missing from Redis); scheduled again`
}

/** While Redis refuses the schedule's writes, how often that is said again. */
const REPORT_EVERY_MS = 5 * 60_000

/** The warning a refused first write is logged with, in the words of `what`. */
export const failedMessage = (what: string): string => `${what} schedule could not be written to Redis, and nothing runs it until it is; the checks write it once Redis takes it`

/** A next run in one of these states will still run, once a worker takes it (or is running it). */
const PENDING = new Set(['delayed', 'waiting', 'prioritized', 'waiting-children', 'active'])

/**
 * A BullMQ job scheduler kept in Redis: written now, then checked every `checkEveryMs` and written
 * again only when it will not run again by itself. A Redis that comes back empty (no AOF, a
 * failover) has lost it, and every run after it with it. BullMQ keeps a scheduler going through the
 * job of its next run alone: the worker that takes it adds the one after. When that job is lost and
 * the record stays (keys lost in part; a worker that ran a run and failed to add the next, which
 * BullMQ gives up on after an error other than a lost connection, e.g. a full Redis), nothing runs
 * it again either. Upserting only then means a check never moves the next run, nor adds a second
 * one: a scheduler whose workers are all down keeps its overdue run, which the first worker back
 * takes. A first write that Redis refuses (full under noeviction, read-only after a failover) is
 * told to `onFailed` and left to the checks, which write it once Redis takes it: it must not stop the
 * process starting, and with it an API that needs only Postgres. Returns the function that stops
 * the checks.
 */
export async function keepScheduled(
  queue: Pick<Queue, 'getJobScheduler' | 'getJobState'>,
  schedulerId: string,
  upsert: () => Promise<unknown>,
  opts: { checkEveryMs: number; onRestored: (lost: LostSchedule) => void; onFailed: (err: Error) => void; reportEveryMs?: number },
): Promise<() => void> {
  // A write Redis refuses is said at once, then again every few minutes while it lasts: a schedule
  // that is never written runs nothing (no sweep, no scrub), and must not be forgotten.
  let reportedAt: number | undefined
  const refused = (err: Error) => {
    const now = performance.now()
    if (reportedAt !== undefined && now - reportedAt < (opts.reportEveryMs ?? REPORT_EVERY_MS)) return
    reportedAt = now
    opts.onFailed(err)
  }
  let unwritten = false
  await upsert().catch((err: Error) => {
    unwritten = true
    refused(err)
  })
  const timer = setInterval(() => {
    lostSchedule(queue, schedulerId)
      .then(async (lost) => {
        if (!lost) return
        // On a kept record BullMQ adds the run after the lost one (or the first due time still
        // ahead, when that has passed too): the lost job is not there to run twice.
        const written = await upsert().then(
          () => true,
          (err: Error) => {
            refused(err)
            return false
          },
        )
        if (!written) return
        reportedAt = undefined
        opts.onRestored(unwritten ? 'unwritten' : lost)
        unwritten = false
      })
      .catch(() => {}) // Redis down: the next check retries
  }, opts.checkEveryMs)
  timer.unref()
  return () => clearInterval(timer)
}

async function lostSchedule(queue: Pick<Queue, 'getJobScheduler' | 'getJobState'>, schedulerId: string): Promise<LostSchedule | undefined> {
  const found = await queue.getJobScheduler(schedulerId)
  if (!found) return 'scheduler'
  if (found.next == null) return undefined
  if (PENDING.has(await queue.getJobState(nextRunJobId(schedulerId, found)))) return undefined
  // Completed, failed or gone. Completed is also what a check sees of a run that finished between
  // its two reads, the scheduler having moved on to the next: read the record again.
  const again = await queue.getJobScheduler(schedulerId)
  if (!again) return 'scheduler'
  return again.next === found.next ? 'next-run' : undefined
}

/**
 * The id of the job of a scheduler's next run, `repeat:<scheduler id>:<due time in ms>`: the form
 * BullMQ documents (its job-scheduler guides) and computes in a private method
 * (JobScheduler.getSchedulerNextJobId). Should it change, no next run would ever be found and
 * every check would upsert: test/queue/schedules.test.ts fails then (a schedule nobody runs is
 * put back).
 */
const nextRunJobId = (schedulerId: string, scheduler: Pick<JobSchedulerJson, 'next'>): string => `repeat:${schedulerId}:${scheduler.next}`
