import { sql } from 'kysely'
import type { Db } from '../db/connect.js'
import { lockCallOfAssignment } from '../assignments/repository.js'
import { isRefusedByPostgres } from '../http/errors.js'
import type { QueueName } from '../routing/index.js'
import { resendJobIdFor, type AssignmentJob, type AssignmentQueue } from './queues.js'
import { withTimeout } from '../lib/timeout.js'

/**
 * Re-sending lost jobs. Once the relay has handed an assignment's job to Redis its outbox row is
 * marked sent, and only the job can move the assignment from `queued` to `offered`. A job can still
 * end without doing so: it fails for good (it stalled more often than maxStalledCount allows — 3 here,
 * MAX_STALLED_COUNT — or it ran out of attempts), or Redis loses it (restarted without an append-only file, flushed). Nothing
 * else looks at a queued assignment — acknowledgement deadlines start at the offer — so it would wait
 * forever. This sweep finds assignments still queued long after their latest outbox row was sent
 * whose job BullMQ no longer has to run, and writes a new outbox row for each with a new job id
 * (BullMQ keeps a failed job's id, and would ignore the same id again); the relay sends it as usual.
 *
 * Exactly one re-send per lost job, however many relays sweep at once: the assignment row is locked
 * with SKIP LOCKED, the latest outbox row must still be the one found lost, and the job id is unique.
 * Never a second offer: a job waiting, active (a worker on it right now, or dead with its lock not yet
 * lapsed) or delayed (retrying) is left alone, a worker in the middle of the offer holds the row
 * (skipped), and offering is idempotent anyway. Each re-send is recorded as a transition (ids only).
 *
 * A sweep pages through the candidates in outbox-row order (a keyset on the row id), so a backlog of
 * jobs still waiting — a queue whose workers are down — cannot hide a lost job behind it. It looks
 * at `maxPages` pages at most (see DEFAULT_MAX_PAGES) and answers where it stopped (`next`); the
 * caller's next sweep carries on from there (`from`), and one that reaches the end starts over.
 *
 * A lost job that Postgres will not let it re-send now (its call's row held by a session left open:
 * a lock or statement time-out, a deadlock) is counted (`failed`) and passed over: the sweep goes on
 * with the rest, and a later sweep finds it again (the one after reaching the end, at the latest).
 * Anything else (Postgres unreachable, a bug) fails the sweep, rather than waiting out a connection
 * time-out for each of the rest.
 */

export const RESEND_ACTOR = 'system:outbox-resend'

/**
 * Whether BullMQ still has the job to run (nothing is lost, however long it takes), or why not,
 * without a scan of a list. BullMQ's state script finds a waiting job by scanning the wait list
 * (LPOS), and a backlog makes that list long just when the sweep has most to look at. The job's
 * own record says as much in one read: `finishedOn` is written by the move to completed or failed
 * for good, and only then (a retry, with attempts left, is a move to delayed or waiting; a retry
 * of a failed job clears it). A finished job's state is then found by the script's first lookups,
 * its completed and failed sets, with no scan.
 */
async function jobOutcome(queue: AssignmentQueue, jobId: string): Promise<'pending' | LostReason> {
  const job = await queue.getJob(jobId)
  if (!job) return 'missing'
  if (!job.finishedOn) return 'pending'
  const state = await queue.getJobState(jobId)
  return state === 'failed' ? 'failed' : state === 'completed' ? 'completed' : 'missing'
}

/** After each re-send of the same assignment the wait doubles, up to 2^6 times `afterMs`: a job that keeps failing does not churn. */
const MAX_DOUBLINGS = 6
const DEFAULT_BATCH = 100
/**
 * Pages one sweep looks at, at most: a backlog of n waiting jobs would otherwise cost one sweep
 * n reads of Redis and n / batch candidate queries of Postgres at once. Bounded, a sweep costs at
 * most this many queries and batch × this many job reads; as each
 * sweep carries on where the last stopped, a lost job behind any backlog is still found within
 * ⌈candidates / (batch × pages)⌉ + 1 sweeps.
 */
const DEFAULT_MAX_PAGES = 5
const DEFAULT_REDIS_WAIT_MS = 2000

/** failed: failed for good; missing: not in Redis; completed: ran without offering (should not happen). */
export type LostReason = 'failed' | 'missing' | 'completed'

export interface Resent {
  assignmentId: string
  queue: QueueName
  /** The new job's id. */
  jobId: string
  previousJobId: string
  /** 1 for the first re-send of this assignment, 2 for the second… */
  resend: number
  reason: LostReason
}

export interface ResendOptions {
  /** An assignment is looked at once its latest outbox row was sent this long ago (doubling after each re-send). */
  afterMs: number
  /** Candidates per page: per candidate query and per round of job states asked of Redis. */
  batchSize?: number
  /** Pages one sweep looks at, at most (DEFAULT_MAX_PAGES). */
  maxPages?: number
  /** Carry on after this outbox row: the previous sweep's `next`. From the first candidate when not given. */
  from?: number
  now?: Date
  /** A Redis that does not answer within this fails the sweep (it holds no row lock while it asks). */
  redisWaitMs?: number
  /** Called as each re-send commits: a sweep that fails at a later page has still made these. */
  onResent?: (r: Resent) => void
}

export interface ResendSweep {
  resent: Resent[]
  /** Candidates whose job state was asked of Redis. */
  looked: number
  /** Candidate queries run. */
  pages: number
  /** The outbox row to carry on after: the sweep stopped at its page bound. Undefined: it reached the last candidate. */
  next: number | undefined
  /** Lost jobs Postgres refused to re-send now (a lock time-out, say): left for a later sweep. */
  failed: number
}

const REASON_TEXT: Record<LostReason, string> = {
  failed: 'failed for good',
  missing: 'is no longer in Redis',
  completed: 'completed without offering it',
}

export async function resendLost(db: Db, queues: Record<QueueName, AssignmentQueue>, opts: ResendOptions): Promise<ResendSweep> {
  const now = opts.now ?? new Date()
  const batchSize = opts.batchSize ?? DEFAULT_BATCH
  const maxPages = opts.maxPages ?? DEFAULT_MAX_PAGES
  const waitMs = opts.redisWaitMs ?? DEFAULT_REDIS_WAIT_MS
  const sweep: ResendSweep = { resent: [], looked: 0, pages: 0, next: undefined, failed: 0 }
  let after = opts.from
  while (sweep.pages < maxPages) {
    // 1. A page of candidates, without locks: queued, and the latest outbox row sent long enough
    // ago. Keyed on the row id: unique, so no ties (a relay batch shares one sent_at), and the order
    // the rows were written in, close to the order they were sent in.
    const candidates = await db
      .selectFrom('assignments as a')
      .innerJoinLateral(
        (eb) =>
          eb
            .selectFrom('outbox')
            .select(['outbox.id', 'outbox.job_id', 'outbox.queue', 'outbox.resend', 'outbox.sent_at'])
            .whereRef('outbox.assignment_id', '=', 'a.id')
            .orderBy('outbox.id', 'desc')
            .limit(1)
            .as('o'),
        (join) => join.onTrue(),
      )
      .select(['a.id as assignmentId', 'o.id as outboxId', 'o.job_id as jobId', 'o.queue', 'o.resend'])
      .where('a.status', '=', 'queued')
      .where('o.sent_at', '<', sql<Date>`${now}::timestamptz - (${opts.afterMs}::float8 * power(2, least(o.resend, ${MAX_DOUBLINGS}))) * interval '1 millisecond'`)
      .$if(after !== undefined, (qb) => qb.where('o.id', '>', after!))
      .orderBy('o.id')
      .limit(batchSize)
      .execute()
    sweep.pages++
    if (!candidates.length) return sweep

    // 2. Which of their jobs BullMQ will still run (asked outside any transaction).
    const outcomes = await withTimeout(
      Promise.all(candidates.map((c) => jobOutcome(queues[c.queue as QueueName], c.jobId))),
      waitMs,
      `job states: no answer from Redis within ${waitMs} ms`,
    )
    sweep.looked += candidates.length

    // 3. One short transaction per lost job.
    for (const [i, c] of candidates.entries()) {
      const reason = outcomes[i]!
      if (reason === 'pending') continue
      let r: Resent | undefined
      try {
        r = await resendOne(db, c, reason, now)
      } catch (err) {
        // Failing the sweep here would stop every later sweep at this same job for as long as its call is held.
        if (!isRefusedByPostgres(err)) throw err
        sweep.failed++
        continue
      }
      if (!r) continue
      sweep.resent.push(r)
      opts.onResent?.(r)
    }
    if (candidates.length < batchSize) return sweep
    after = candidates.at(-1)!.outboxId
  }
  // Stopped at the bound with candidates maybe left: the next sweep carries on after the last looked at.
  sweep.next = after
  return sweep
}

interface Candidate {
  assignmentId: string
  outboxId: number
}

async function resendOne(db: Db, c: Candidate, reason: LostReason, now: Date): Promise<Resent | undefined> {
  return db.transaction().execute(async (trx) => {
    // The call first, as every writer of transitions (src/assignments/repository.ts, callFirst).
    await lockCallOfAssignment(trx, c.assignmentId)
    // Locked by a worker offering it, or by another sweep re-sending it: theirs to finish.
    const a = await trx.selectFrom('assignments').select(['status', 'role']).where('id', '=', c.assignmentId).forUpdate().skipLocked().executeTakeFirst()
    if (!a || a.status !== 'queued') return undefined
    const latest = await trx
      .selectFrom('outbox')
      .select(['id', 'queue', 'job_id', 'payload', 'trace_context', 'resend'])
      .where('assignment_id', '=', c.assignmentId)
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirstOrThrow()
    // Someone re-sent it since we looked.
    if (latest.id !== c.outboxId) return undefined
    const resend = latest.resend + 1
    const jobId = resendJobIdFor(c.assignmentId, resend)
    const inserted = await trx
      .insertInto('outbox')
      .values({
        assignment_id: c.assignmentId,
        queue: latest.queue,
        job_id: jobId,
        payload: JSON.stringify(latest.payload as AssignmentJob),
        trace_context: latest.trace_context,
        resend,
      })
      .onConflict((oc) => oc.column('job_id').doNothing())
      .returning('id')
      .executeTakeFirst()
    if (!inserted) return undefined
    await trx.updateTable('assignments').set({ updated_at: now }).where('id', '=', c.assignmentId).execute()
    await trx
      .insertInto('assignment_transitions')
      .values({
        assignment_id: c.assignmentId,
        from_status: 'queued',
        to_status: 'queued',
        role: a.role,
        actor: RESEND_ACTOR,
        reason: `re-sent as job ${jobId}: job ${latest.job_id} ${REASON_TEXT[reason]}`,
      })
      .execute()
    return { assignmentId: c.assignmentId, queue: latest.queue as QueueName, jobId, previousJobId: latest.job_id, resend, reason }
  })
}
