import { Queue, Worker } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { Db } from '../db/connect.js'
import { failedMessage, keepScheduled, restoredMessage } from '../queue/schedules.js'
import { drainOrReturn, drainUntil, inFlight, inFlightJobs } from '../workers/responder-worker.js'
import { OUTBOX_KEEP_DAYS, pruneSentOutbox } from './outbox-prune.js'
import { scrubPersonalData } from './scrub.js'

const QUEUE = 'maintenance'
const SCHEDULER_ID = 'retention-scrub'
/** A run that fails (Postgres away, a statement time-out) goes again this many times in all before the next interval. */
const ATTEMPTS = 3
/** The longest wait between two checks that the scrub's schedule is still in Redis. */
const WATCHDOG_MAX_MS = 5 * 60_000

export interface RetentionDeps {
  db: Db
  /** A connection, not options: a run handed back at close goes back over it after the worker's forced close (drainOrReturn). */
  connection: Redis
  prefix: string
  retentionDays: number
  everyMs: number
  /** The first retry's wait after a failed run (doubling after); 1 minute by default. */
  retryMs?: number
  /** How long close() lets a run finish before handing it back (when not given a deadline). */
  drainMs?: number
  log: FastifyBaseLogger
}

/**
 * Runs the retention scrub, and the pruning of sent outbox rows, on a BullMQ job scheduler (every
 * hour by default): one schedule however many worker processes run, and it survives restarts because
 * it lives in Redis. Takes no job until start(): src/main.ts starts its workers together.
 */
export async function createRetention(deps: RetentionDeps) {
  const queue = new Queue(QUEUE, { connection: deps.connection, prefix: deps.prefix })
  // Aborted at close: a run through a large backlog stops after the batch in hand instead of holding
  // the shutdown (the other workers drain beside it) past SHUTDOWN_GRACE_MS.
  const stopping = new AbortController()
  // The run in flight, so a close that runs out of time (a batch stuck on a lock) can hand it back.
  const jobs = inFlightJobs()
  const worker = new Worker(
    QUEUE,
    (job, token) =>
      inFlight(jobs, job.id ?? '', job, token, async () => {
        const before = new Date(Date.now() - deps.retentionDays * 86_400_000)
        const result = await scrubPersonalData(deps.db, before, { signal: stopping.signal })
        if (result.calls) deps.log.info({ ...result, retentionDays: deps.retentionDays }, 'personal data removed from old calls')
        // Housekeeping, not personal data: a failure is logged as its own and waits for the next run,
        // rather than failing the job and running the scrub again.
        let outboxRows = 0
        try {
          outboxRows = await pruneSentOutbox(deps.db, new Date(Date.now() - OUTBOX_KEEP_DAYS * 86_400_000), { signal: stopping.signal })
          if (outboxRows) deps.log.info({ outboxRows, keepDays: OUTBOX_KEEP_DAYS }, 'sent outbox rows of finished assignments deleted')
        } catch (err) {
          // The Error itself: the logger keeps its message, code and cause (src/logger.ts), no values.
          deps.log.warn({ err }, 'outbox prune failed; it runs again at the next interval')
        }
        return { ...result, outboxRows }
      }),
    { connection: deps.connection, prefix: deps.prefix, concurrency: 1, autorun: false },
  )
  worker.on('error', (err) => deps.log.warn({ err: { message: err.message } }, 'retention worker error'))
  // Personal data kept past its time is a failure someone must see: each failed run is logged.
  worker.on('failed', (job, err) => {
    // BullMQ may report a failure without its job: then which attempt it was is unknown.
    const attempt = job?.attemptsMade
    const next = attempt === undefined ? '' : attempt < ATTEMPTS ? '; it runs again shortly' : '; it runs again at the next interval'
    deps.log.warn({ attempt, attempts: ATTEMPTS, err: { message: err.message } }, `retention scrub failed${next}`)
  })
  // Without a listener BullMQ writes the queue's connection errors raw to stderr; the worker above reports them.
  queue.on('error', () => {})
  // A Redis that comes back empty has lost the schedule, and with it every later scrub: personal data
  // would stay past RETENTION_DAYS until a worker process restarts. It is put back, as the lifecycle
  // sweep's is, checked at least every 5 minutes (two cheap commands) so a lost schedule is back long
  // before its next run was due, and never past setInterval's limit (about 24.8 days). A schedule
  // whose next run alone was lost runs again at the interval after that run.
  const stopWatchdog = await keepScheduled(
    queue,
    SCHEDULER_ID,
    () =>
      queue.upsertJobScheduler(SCHEDULER_ID, { every: deps.everyMs }, {
        name: 'scrub',
        opts: { removeOnComplete: 100, removeOnFail: 100, attempts: ATTEMPTS, backoff: { type: 'exponential', delay: deps.retryMs ?? 60_000 } },
      }),
    {
      checkEveryMs: Math.min(deps.everyMs, WATCHDOG_MAX_MS),
      onRestored: (lost) => deps.log.warn({ queue: QUEUE }, restoredMessage('the retention scrub', lost)),
      onFailed: (err) => deps.log.warn({ queue: QUEUE, err: { message: err.message } }, failedMessage('the retention scrub')),
    },
  )
  let closing: Promise<void> | undefined
  return {
    worker,
    start(): void {
      void worker.run().catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'retention worker stopped'))
    },
    /**
     * Bounded like the responder workers: the run stops after the batch in hand, and one that has not
     * finished by `until` (performance.now(); `drainMs` from now when not given) goes back to the
     * queue — a batch stuck in Postgres, say, whose session the Postgres close then ends. The scrub
     * is idempotent: the next run redoes it. Safe to call twice.
     */
    close(until = drainUntil(deps.drainMs)): Promise<void> {
      stopWatchdog()
      stopping.abort()
      closing ??= drainOrReturn([worker], jobs, until, deps.log).finally(() => queue.close())
      return closing
    },
  }
}
