import { DelayedError, type Job } from 'bullmq'
import { isUnavailableError } from '../http/errors.js'
import type { InFlightJobs } from './responder-worker.js'

/** How soon a job that met an unavailable Postgres or Redis tries again (it uses no attempt). */
export const UNAVAILABLE_RETRY_MS = 1000

/**
 * Runs a job's work; when it meets an unavailable Postgres or Redis, the job tries again in a
 * second without using an attempt. BullMQ's backoff doubles (0.5, 1, 2 … 64 s): a job that met an
 * outage of a minute would wait up to another minute after it ended, and one longer would fail for
 * good. Anything else, and anything while the workers are stopping (a drain may have handed the
 * job back already, and it is no longer ours to move), goes to BullMQ as it came: its attempts and
 * backoff apply. `onWait` hears of each wait (a throttled log line).
 */
export async function waitingOutUnavailable<T>(
  job: Pick<Job, 'moveToDelayed'>,
  token: string | undefined,
  jobs: Pick<InFlightJobs, 'stopping'>,
  onWait: (err: Error) => void,
  work: () => Promise<T>,
): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (!isUnavailableError(err) || jobs.stopping) throw err
    onWait(err as Error)
    await job.moveToDelayed(Date.now() + UNAVAILABLE_RETRY_MS, token)
    throw new DelayedError()
  }
}
