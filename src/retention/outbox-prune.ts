import { sql } from 'kysely'
import type { Db } from '../db/connect.js'
import { OPEN_STATUSES } from '../assignments/state-machine.js'

/** How long a sent outbox row of a finished assignment is kept: long enough to trace a job in Redis back to it. */
export const OUTBOX_KEEP_DAYS = 7

/**
 * Deletes outbox rows sent before `before` whose assignment is finished (completed, declined,
 * cancelled, escalated, expired). An outbox row is plumbing, not a record: the assignment and its
 * transitions say what happened. Nothing reads a sent row of a finished assignment — the relay reads
 * unsent rows, the re-send sweep the latest row of a queued assignment — so without this the table
 * only grows, by a row or more per assignment.
 *
 * In batches, each its own statement, walking the primary key from its start: rows are numbered in
 * the order they were written, so the walk stops at the first row written after `before` and never
 * reads the recent part of the table, which is most of it once a first run has caught up.
 */
export async function pruneSentOutbox(db: Db, before: Date, opts: { batchSize?: number; signal?: AbortSignal } = {}): Promise<number> {
  const batchSize = opts.batchSize ?? 5000
  const { rows } = await sql<{ id: string }>`select id from outbox where created_at >= ${before} order by id limit 1`.execute(db)
  const end = rows[0]?.id ?? '9223372036854775807'
  let deleted = 0
  for (;;) {
    // A shutdown ends the walk between batches, as it ends the scrub's.
    if (opts.signal?.aborted) return deleted
    // The ids as an array: an IN over the subquery was planned as a scan of the whole table per batch.
    const { numAffectedRows } = await sql`
      delete from outbox where id = any(array(
        select o.id from outbox o join assignments a on a.id = o.assignment_id
        where o.id < ${end}::bigint
          and o.sent_at < ${before}
          and a.status <> all(${[...OPEN_STATUSES]}::text[])
        order by o.id
        limit ${batchSize}
        for update of o skip locked))`.execute(db)
    const n = Number(numAffectedRows ?? 0)
    deleted += n
    if (n < batchSize) return deleted
  }
}
