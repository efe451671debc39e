import { Queue, type ConnectionOptions, type JobsOptions, type Telemetry } from 'bullmq'
import { z } from 'zod'
import { QUEUES, type QueueName } from '../routing/index.js'

/** What a responder job carries: ids only — personal data stays in Postgres. */
export const assignmentJobSchema = z
  .object({
    assignmentId: z.string().uuid(),
    callId: z.string().min(1),
    agency: z.string().min(1),
    queue: z.enum(QUEUES),
    role: z.enum(['primary', 'support']),
    // Case management only, when its decision saw an active link: the case manager's id (county
    // staff, not the subject), so the worker knows whom the job is for without reading the call.
    caseManager: z.string().min(1).optional(),
  })
  .strict()
export type AssignmentJob = z.infer<typeof assignmentJobSchema>

/** The job of an assignment, as ingest and escalation write it to the outbox: one place, so a field added to jobs reaches both. */
export function assignmentJob(a: { id: string; callId: string; agency: string; queue: QueueName; role: AssignmentJob['role']; caseManager: string | null }): AssignmentJob {
  return { assignmentId: a.id, callId: a.callId, agency: a.agency, queue: a.queue, role: a.role, ...(a.caseManager ? { caseManager: a.caseManager } : {}) }
}

export const ASSIGNMENT_JOB_NAME = 'assignment.offer'

/** BullMQ job ids may not contain ':' nor be all digits; a prefixed uuid is neither. */
export const jobIdFor = (assignmentId: string): string => `asg-${assignmentId}`

/**
 * The job id of the n-th re-send of an assignment whose job was lost (src/queue/resend.ts). A new id,
 * because BullMQ refuses to add a job whose id it still holds, failed ones included.
 */
export const resendJobIdFor = (assignmentId: string, resend: number): string => (resend ? `${jobIdFor(assignmentId)}-r${resend}` : jobIdFor(assignmentId))

export const defaultJobOptions: JobsOptions = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 500 },
  // Completed jobs stay a day so a re-sent job id is still recognised as a duplicate.
  removeOnComplete: { age: 24 * 3600, count: 100_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
}

export type AssignmentQueue = Queue<AssignmentJob, void, typeof ASSIGNMENT_JOB_NAME>

export function createQueues(connection: ConnectionOptions, prefix: string, telemetry?: Telemetry): Record<QueueName, AssignmentQueue> {
  const entries = QUEUES.map((name) => {
    const queue = new Queue<AssignmentJob, void, typeof ASSIGNMENT_JOB_NAME>(name, { connection, prefix, defaultJobOptions, ...(telemetry ? { telemetry } : {}) })
    // The relay reports a Redis that is down (its sends fail); without a listener BullMQ writes
    // each connection error raw to stderr, outside the structured log.
    queue.on('error', () => {})
    return [name, queue] as const
  })
  return Object.fromEntries(entries) as Record<QueueName, AssignmentQueue>
}
