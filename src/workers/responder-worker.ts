import { performance } from 'node:perf_hooks'
import { DelayedError, UnrecoverableError, WaitingError, Worker, type Job, type Telemetry } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { Db } from '../db/connect.js'
import { offerInOneStatement } from '../assignments/repository.js'
import { isOpen } from '../assignments/state-machine.js'
import { scheduleAckDeadline, scheduleOverdueCheck, type LifecycleQueue } from '../queue/lifecycle.js'
import { assignmentJobSchema, ASSIGNMENT_JOB_NAME, type AssignmentJob } from '../queue/queues.js'
import { QUEUES, type QueueName } from '../routing/index.js'
import { throttledWarn } from '../lib/log-throttle.js'
import { watchForOrphans, type OrphanWatch } from './orphans.js'
import { waitingOutUnavailable } from './unavailable.js'

export interface ResponderWorkerDeps {
  db: Db
  /** A connection made with maxRetriesPerRequest: null; BullMQ duplicates it for blocking reads. */
  connection: Redis
  prefix: string
  concurrency: number
  /** Per-queue concurrency; queues not named use `concurrency`. */
  concurrencyPerQueue?: Partial<Record<QueueName, number>>
  /** BullMQ's defaults (30 s each) when not given; see WORKER_LOCK_DURATION_MS in config. */
  lockDurationMs?: number
  stalledIntervalMs?: number
  log: FastifyBaseLogger
  queues?: readonly QueueName[]
  /** BullMQ telemetry (tracing on): each job's span continues the trace of the call event. */
  telemetry?: Telemetry
  /** Where acknowledgement deadlines go; without it offers carry no deadline. */
  lifecycle?: LifecycleQueue
  /** Seconds per queue before an offer escalates; queues not named have no deadline. */
  ackDeadlines?: Partial<Record<QueueName, number>>
  /** How long close() lets jobs in flight finish before handing them back to the queue (when not given a deadline). */
  drainMs?: number
}

export interface OfferOptions {
  lifecycle?: LifecycleQueue | undefined
  ackDeadlines?: Partial<Record<QueueName, number>> | undefined
  now?: () => Date
}

/** A reserved follow-up whose time has not come: the job waits (delayed) until then. */
export interface NotYet {
  reservedUntil: Date
}

/**
 * Offers an assignment to its pool: queued (or a reserved follow-up whose time has come) → offered,
 * with its acknowledgement deadline, and schedules the deadline job. Idempotent: offering twice, or
 * an assignment a console already moved on, changes nothing; the deadline job id is the assignment's.
 * The deadline job is added after the commit: a crash in between fails or stalls this job, and the
 * retry (which finds the assignment offered) adds it.
 */
export async function offerNow(db: Db, assignmentId: string, queue: QueueName, opts: OfferOptions = {}): Promise<'offered' | 'unchanged'> {
  const out = await offer(db, assignmentId, queue, opts)
  return out?.changed ? 'offered' : 'unchanged'
}

async function offer(db: Db, assignmentId: string, queue: QueueName, opts: OfferOptions, holdReservedUntilAfter?: Date) {
  const now = opts.now?.() ?? new Date()
  const seconds = opts.ackDeadlines?.[queue]
  const out = await offerInOneStatement(db, assignmentId, {
    actor: `worker:${queue}`,
    reason: 'delivered to the responder pool',
    ackDeadlineAt: seconds ? new Date(now.getTime() + seconds * 1000) : null,
    ...(holdReservedUntilAfter ? { holdReservedUntilAfter } : {}),
  })
  const view = out?.view
  if (opts.lifecycle && view?.status === 'offered' && view.ackDeadlineAt) await scheduleAckDeadline(opts.lifecycle, assignmentId, new Date(view.ackDeadlineAt), now.getTime())
  return out
}

export async function offerAssignment(db: Db, job: Pick<Job<unknown>, 'id' | 'data'>, opts: OfferOptions = {}): Promise<'offered' | 'unchanged' | NotYet> {
  const parsed = assignmentJobSchema.safeParse(job.data)
  if (!parsed.success) throw new UnrecoverableError(`job ${job.id} has malformed data`)
  const data: AssignmentJob = parsed.data
  const now = opts.now?.() ?? new Date()
  // Anything thrown here is transient (Postgres down…): BullMQ retries with backoff.
  const out = await offer(db, data.assignmentId, data.queue, { ...opts, now: () => now }, now)
  if (!out) throw new UnrecoverableError(`job ${job.id}: no such assignment`)
  const { before } = out
  // On first delivery, before any wait: a follow-up taken early is still checked at its due time.
  if (opts.lifecycle && before.dueAt && isOpen(before.status)) await scheduleOverdueCheck(opts.lifecycle, data.assignmentId, before.dueAt, now.getTime())
  if (!out.changed && before.status === 'reserved' && before.reservedUntil && before.reservedUntil.getTime() > now.getTime()) return { reservedUntil: before.reservedUntil }
  return out.changed ? 'offered' : 'unchanged'
}

export function createResponderWorkers(deps: ResponderWorkerDeps) {
  // Jobs in flight, so a close that runs out of time can hand them back at once.
  const jobs = inFlightJobs()
  const watches: OrphanWatch[] = []
  // One line per 30 s for an error every queue's worker repeats (Redis refusing connections).
  const errorWarn = throttledWarn(deps.log, WORKER_ERROR_LOG_EVERY_MS)
  const workers = (deps.queues ?? QUEUES).map((name) => {
    const worker = new Worker<AssignmentJob, void, typeof ASSIGNMENT_JOB_NAME>(
      name,
      (job, token) =>
        inFlight(jobs, `${name}/${job.id}`, job, token, async () => {
          // Postgres (or Redis) away: the job tries again in a second, without using an attempt.
          const outcome = await waitingOutUnavailable(
            job,
            token,
            jobs,
            (err) => errorWarn('job waiting: unavailable', { queue: name, jobId: job.id, err: { message: err.message } }, 'assignment job waiting for Postgres or Redis'),
            () => offerAssignment(deps.db, job, { lifecycle: deps.lifecycle, ackDeadlines: deps.ackDeadlines }),
          )
          if (typeof outcome === 'object') {
            // Not due yet: the same job comes back when the follow-up's time comes (delays live in Redis).
            await job.moveToDelayed(outcome.reservedUntil.getTime(), token)
            throw new DelayedError()
          }
          deps.log.debug({ queue: name, jobId: job.id, outcome }, 'assignment job processed')
        }),
      {
        connection: deps.connection,
        prefix: deps.prefix,
        concurrency: deps.concurrencyPerQueue?.[name] ?? deps.concurrency,
        autorun: false,
        // After a Redis connection error BullMQ waits this long before fetching again (15 s by
        // default): every delivery would wait that long after Redis returns.
        runRetryDelay: 1000,
        maxStalledCount: MAX_STALLED_COUNT,
        ...(deps.lockDurationMs ? { lockDuration: deps.lockDurationMs } : {}),
        ...(deps.stalledIntervalMs ? { stalledInterval: deps.stalledIntervalMs } : {}),
        ...(deps.telemetry ? { telemetry: deps.telemetry } : {}),
      },
    )
    worker.on('error', (err) => errorWarn(err.message, { queue: name, err: { message: err.message } }, 'worker error'))
    worker.on('failed', (job, err) => deps.log.warn({ queue: name, jobId: job?.id, attemptsMade: job?.attemptsMade, err: { message: err.message } }, 'assignment job failed'))
    worker.on('stalled', (jobId) => deps.log.warn({ queue: name, jobId }, 'assignment job stalled (its lock lapsed): handed out again'))
    watches.push(watchForOrphans(worker, deps.connection, (jobId) => jobs.active.has(`${name}/${jobId}`), deps.log))
    return worker
  })
  let closing: Promise<void> | undefined
  return {
    workers,
    start(): void {
      for (const w of workers) void w.run().catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'worker stopped'))
    },
    /** Looks for jobs lost in a hand-over now (it runs by itself after each reconnect). */
    async sweepOrphans(): Promise<number> {
      let n = 0
      for (const w of watches) n += await w.sweep()
      return n
    },
    /**
     * Takes no new jobs, lets the jobs in flight finish until `until` (performance.now(); `drainMs`
     * from now when not given), then hands the rest back to their queue (another worker takes them;
     * processing is idempotent). Safe to call twice.
     */
    close(until = drainUntil(deps.drainMs)): Promise<void> {
      for (const w of watches) w.stop()
      closing ??= drainOrReturn(workers, jobs, until, deps.log)
      return closing
    },
  }
}

/** How often a repeating worker error is logged (each is still counted in the metrics). */
export const WORKER_ERROR_LOG_EVERY_MS = 30_000

/**
 * A job whose lock lapsed (a stall) runs again; after this many stalls it fails for good (the
 * relay's re-send then takes over). BullMQ's 1 would fail a job caught twice by Redis outages
 * longer than the lock, which is short here (WORKER_LOCK_DURATION_MS).
 */
export const MAX_STALLED_COUNT = 3

export interface InFlight {
  job: { id?: string | undefined; moveToWait(token?: string): Promise<number> }
  token: string | undefined
  /** Handed back to its queue by a shutdown that ran out of time: the job is no longer this worker's. */
  handedBack?: boolean
}

/** The jobs in flight of some workers, and whether those workers are stopping (drainOrReturn). */
export interface InFlightJobs {
  active: Map<string, InFlight>
  stopping: boolean
}

export const inFlightJobs = (): InFlightJobs => ({ active: new Map(), stopping: false })

// Never settles: what a handed-back job's processor gives BullMQ (see inFlight).
const NEVER = new Promise<never>(() => {})

/**
 * Runs a job's work as one of the jobs in flight. A job handed back at shutdown (drainOrReturn)
 * belongs to its queue again, and the force-closed worker's connection is gone: its processor,
 * finishing later, reports nothing to BullMQ — an outcome reported then would fail on the closed
 * connection with nobody to catch it. Its work is idempotent; the next worker redoes or skips it.
 */
export async function inFlight<T>(jobs: InFlightJobs, key: string, job: InFlight['job'], token: string | undefined, work: () => Promise<T>): Promise<T> {
  if (jobs.stopping) {
    // Taken after the pause: BullMQ's pause does not cancel a fetch already waiting in Redis, which
    // then takes the next job (one handed back by a drain, even). Not ours to run: straight back,
    // and WaitingError tells BullMQ the job has moved, so the worker's close does not wait for it.
    await job.moveToWait(token)
    throw new WaitingError()
  }
  const { active } = jobs
  const entry: InFlight = { job, token }
  active.set(key, entry)
  let out: T
  try {
    out = await work()
  } catch (err) {
    if (!entry.handedBack) throw err
  } finally {
    // A job handed back and taken again by this worker has a new entry under the same key.
    if (active.get(key) === entry) active.delete(key)
  }
  if (entry.handedBack) return NEVER
  return out!
}

/** A close's deadline when it is given none (a test's close; main.ts gives one): `drainMs` from now. */
export const drainUntil = (drainMs = 5_000): number => performance.now() + drainMs

/**
 * Shared with the lifecycle worker: pause, let jobs in flight finish until `until`
 * (performance.now()), hand back the rest. The process gives all its workers the same `until`
 * (src/main.ts), so they drain side by side: the worker role takes one WORKER_DRAIN_MS, not one
 * per worker.
 */
export async function drainOrReturn(
  workers: ReadonlyArray<{ pause(doNotWaitActive?: boolean): Promise<void>; close(force?: boolean): Promise<void>; waitUntilReady(): Promise<unknown> }>,
  jobs: InFlightJobs,
  until: number,
  log: FastifyBaseLogger,
): Promise<void> {
  const { active } = jobs
  jobs.stopping = true
  // A worker closed while its Redis connections are still starting leaves BullMQ's start-up check
  // rejected with nobody listening (a stop right after a start): let them finish, for a second at most.
  await Promise.race([Promise.all(workers.map((w) => w.waitUntilReady().catch(() => {}))), new Promise((r) => setTimeout(r, 1000).unref())])
  // Stop taking jobs, then give the ones in flight their time. (Not close(): a close in progress
  // cannot be turned into a forced one.)
  await Promise.all(workers.map((w) => w.pause(true)))
  while (active.size && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
  const left = [...active.values()]
  if (!left.length) {
    await Promise.all(workers.map((w) => w.close()))
    return
  }
  log.warn({ jobs: left.length }, 'jobs still running at shutdown: handing them back to their queues')
  for (const entry of left) entry.handedBack = true
  // Closed before the hand-back: a paused worker's fetch still waiting in Redis would take a job
  // handed back at once again. The jobs go back over the connection the workers share (a Redis
  // instance, deps.connection), which their close leaves open.
  await Promise.allSettled(workers.map(closeForGood))
  await Promise.all(left.map(({ job, token }) => job.moveToWait(token).catch((err: Error) => log.warn({ jobId: job.id, err: { message: err.message } }, 'could not hand a job back; it returns when its lock expires'))))
}

/**
 * A forced close that returns once the worker's blocking connection has really closed. BullMQ's
 * close only starts closing it: until Redis has dropped it, the fetch waiting on it (BZPOPMIN on the
 * queue's marker) can still be answered, woken by the marker of the very hand-back that follows,
 * and the closed worker then takes that job again on the shared connection and holds it, unrun,
 * until its lock lapses (about one run in four of test/faults/shutdown-stuck-jobs.test.ts; none
 * in ten since). Once the connection has ended, whatever that fetch started has already been sent,
 * ahead of the hand-back. The blocking connection is BullMQ's own (protected): should it move, that
 * test's hand-back check fails again now and then.
 */
async function closeForGood(worker: { close(force: true): Promise<void> }): Promise<void> {
  // Not in BullMQ's types: the Worker's duplicate of its connection for blocking waits.
  const blocking = (worker as unknown as { blockingConnection?: { client: Promise<Redis> } }).blockingConnection
  // A worker made while Redis was down may never have connected it (its promise waits for Redis): not
  // connected, it has no fetch waiting to be answered.
  const client = blocking && (await Promise.race([blocking.client.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), 200).unref())]))
  const ended =
    client && client.status !== 'end'
      ? new Promise<void>((resolve) => {
          client.once('end', () => resolve())
          setTimeout(resolve, 1000).unref()
        })
      : undefined
  await worker.close(true)
  await ended
}

export type ResponderWorkers = ReturnType<typeof createResponderWorkers>
