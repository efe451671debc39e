import { UnrecoverableError, Worker, type Job } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { Db } from '../db/connect.js'
import { AppError } from '../http/errors.js'
import { moveAssignment } from '../assignments/repository.js'
import { assignmentJobSchema, ASSIGNMENT_JOB_NAME, type AssignmentJob } from '../queue/queues.js'
import { QUEUES, type QueueName } from '../routing/index.js'

export interface ResponderWorkerDeps {
  db: Db
  /** A connection made with maxRetriesPerRequest: null; BullMQ duplicates it for blocking reads. */
  connection: Redis
  prefix: string
  concurrency: number
  /** BullMQ's defaults (30 s each) when not given; see WORKER_LOCK_DURATION_MS in config. */
  lockDurationMs?: number
  stalledIntervalMs?: number
  log: FastifyBaseLogger
  queues?: readonly QueueName[]
}

/**
 * Delivers an assignment to its responder pool: queued → offered. Idempotent: a job delivered
 * twice, or one whose assignment a console already moved on, changes nothing.
 */
export async function offerAssignment(db: Db, job: Pick<Job<unknown>, 'id' | 'data'>): Promise<'offered' | 'unchanged'> {
  const parsed = assignmentJobSchema.safeParse(job.data)
  if (!parsed.success) throw new UnrecoverableError(`job ${job.id} has malformed data`)
  const data: AssignmentJob = parsed.data
  try {
    const { changed } = await moveAssignment(db, data.assignmentId, 'offer', { actor: `worker:${data.queue}`, reason: 'delivered to the responder pool' }, { ifAlready: 'ok' })
    return changed ? 'offered' : 'unchanged'
  } catch (err) {
    if (err instanceof AppError && err.code === 'illegal-transition') return 'unchanged'
    if (err instanceof AppError && err.code === 'not-found') throw new UnrecoverableError(`job ${job.id}: no such assignment`)
    throw err // transient (Postgres down…): BullMQ retries with backoff
  }
}

export function createResponderWorkers(deps: ResponderWorkerDeps) {
  const workers = (deps.queues ?? QUEUES).map((name) => {
    const worker = new Worker<AssignmentJob, void, typeof ASSIGNMENT_JOB_NAME>(
      name,
      async (job) => {
        const outcome = await offerAssignment(deps.db, job)
        deps.log.debug({ queue: name, jobId: job.id, outcome }, 'assignment job processed')
      },
      {
        connection: deps.connection,
        prefix: deps.prefix,
        concurrency: deps.concurrency,
        autorun: false,
        // After a Redis connection error BullMQ waits this long before fetching again (15 s by
        // default): every delivery would wait that long after Redis returns.
        runRetryDelay: 1000,
        ...(deps.lockDurationMs ? { lockDuration: deps.lockDurationMs } : {}),
        ...(deps.stalledIntervalMs ? { stalledInterval: deps.stalledIntervalMs } : {}),
      },
    )
    worker.on('error', (err) => deps.log.warn({ queue: name, err: { message: err.message } }, 'worker error'))
    worker.on('failed', (job, err) => deps.log.warn({ queue: name, jobId: job?.id, attemptsMade: job?.attemptsMade, err: { message: err.message } }, 'assignment job failed'))
    return worker
  })
  return {
    workers,
    start(): void {
      for (const w of workers) void w.run().catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'worker stopped'))
    },
    /** Waits for jobs in flight (up to the caller's grace period); safe to call twice. */
    async close(): Promise<void> {
      await Promise.all(workers.map((w) => w.close()))
    },
  }
}

export type ResponderWorkers = ReturnType<typeof createResponderWorkers>
