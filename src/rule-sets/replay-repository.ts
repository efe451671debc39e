import { sql } from 'kysely'
import type { Executor } from '../db/connect.js'
import type { RoutingFacts } from '../routing/index.js'
import type { ReplayItem } from './replay.js'

export interface StoredRange {
  from: Date
  to: Date
  /** null: every agency. */
  agencies: readonly string[] | null
}

/**
 * One item per call first seen in [from, to): the facts stored with its latest routing decision (a
 * close does not route, so the latest decision of a created or updated event wins). Latest as
 * ingest applies events, by the event's occurredAt: a decision's created_at is its API's clock, read
 * before the call's lock was waited for, so an instance that applied the later event may have
 * stamped it earlier. Read in batches by call id, so a long range does not sit in memory at once.
 */
export async function* storedDecisions(db: Executor, range: StoredRange, batchSize = 2000): AsyncGenerator<ReplayItem> {
  if (range.agencies !== null && range.agencies.length === 0) return
  let after = ''
  for (;;) {
    let q = db
      .selectFrom('decisions as d')
      .innerJoin('calls as c', 'c.call_id', 'd.call_id')
      .innerJoin('call_events as e', 'e.event_id', 'd.event_id')
      .distinctOn('d.call_id')
      .select(['d.call_id', 'd.facts'])
      .where('c.created_at', '>=', range.from)
      .where('c.created_at', '<', range.to)
      .where('d.call_id', '>', after)
    if (range.agencies !== null) q = q.where('c.agency', 'in', [...range.agencies])
    const rows = await q
      .orderBy('d.call_id')
      .orderBy(sql`(d.facts->>'eventType') = 'call.closed'`)
      .orderBy('e.occurred_at', 'desc')
      .orderBy('d.created_at', 'desc')
      .orderBy('d.id', 'desc')
      .limit(batchSize)
      .execute()
    for (const r of rows) yield { callId: r.call_id, facts: r.facts as RoutingFacts }
    if (rows.length < batchSize) return
    after = rows.at(-1)!.call_id
  }
}
