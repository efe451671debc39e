import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq'
import { z } from 'zod'

/**
 * The lifecycle queue: acknowledgement deadlines (delayed jobs) and the Postgres sweep behind them.
 * Shared by the responder worker (which adds deadline jobs when it offers) and the lifecycle worker.
 */
export const LIFECYCLE_QUEUE = 'lifecycle'
export const ACK_DEADLINE_JOB = 'ack-deadline'
export const FOLLOW_UP_OVERDUE_JOB = 'follow-up-overdue'
export const SWEEP_JOB = 'sweep'
export const SWEEP_SCHEDULER_ID = 'lifecycle-sweep'

export const ackDeadlineJobSchema = z.object({ assignmentId: z.string().uuid() }).strict()
export type AckDeadlineJob = z.infer<typeof ackDeadlineJobSchema>
export type LifecycleJob = AckDeadlineJob | Record<string, never>
export type LifecycleJobName = typeof ACK_DEADLINE_JOB | typeof FOLLOW_UP_OVERDUE_JOB | typeof SWEEP_JOB

/** One deadline per assignment: a second add (a worker offering twice) is a no-op. No ':' in job ids. */
export const ackDeadlineJobId = (assignmentId: string): string => `ack-${assignmentId}`
export const overdueJobId = (assignmentId: string): string => `overdue-${assignmentId}`

export const lifecycleJobOptions: JobsOptions = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { age: 24 * 3600, count: 100_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
}

// Names are typed as plain strings: BullMQ types job scheduler ids with the job-name parameter.
export type LifecycleQueue = Queue<LifecycleJob, unknown, string>

export function createLifecycleQueue(connection: ConnectionOptions, prefix: string): LifecycleQueue {
  const queue = new Queue<LifecycleJob, unknown, string>(LIFECYCLE_QUEUE, { connection, prefix, defaultJobOptions: lifecycleJobOptions })
  // As the responder queues: an 'error' BullMQ emits with no listener ends up raw on stderr, outside
  // the structured log; the workers on this connection report a Redis that is down, and a failed add
  // fails its caller.
  queue.on('error', () => {})
  return queue
}

/** Adds (idempotently) the job that escalates an offered assignment not acknowledged by `deadline`. */
export async function scheduleAckDeadline(queue: LifecycleQueue, assignmentId: string, deadline: Date, now = Date.now()): Promise<void> {
  await queue.add(ACK_DEADLINE_JOB, { assignmentId }, { jobId: ackDeadlineJobId(assignmentId), delay: Math.max(0, deadline.getTime() - now) })
}

/** Adds (idempotently) the job that records a follow-up still open at its due time as overdue (for the feed). */
export async function scheduleOverdueCheck(queue: LifecycleQueue, assignmentId: string, dueAt: Date, now = Date.now()): Promise<void> {
  await queue.add(FOLLOW_UP_OVERDUE_JOB, { assignmentId }, { jobId: overdueJobId(assignmentId), delay: Math.max(0, dueAt.getTime() - now) })
}
