import { sql, type Expression, type ExpressionBuilder, type SqlBool, type Transaction } from 'kysely'
import type { Db } from '../db/connect.js'
import type { Database } from '../db/schema.js'

export interface ScrubResult {
  calls: number
  events: number
  /** Assignment transitions whose console-typed words were removed. */
  reasons: number
}

/**
 * Removes personal data (caller, subject, description, street address and its hash, county person id) from calls
 * closed — or last touched — before `before`, in the call row and in the stored event bodies, and
 * the words consoles typed on its assignment moves (the reason given with a decline, say). What
 * the statistics need stays: agency, city, nature code, priority, flags, route, decisions,
 * assignments, the service's own reasons and times. Idempotent: a scrubbed call is not touched
 * again, unless an event or a typed reason of it is stored later.
 *
 * In batches of `batchSize` calls, each its own transaction: a large backlog (the first run, a
 * shorter RETENTION_DAYS) neither outlasts the statement timeout nor holds many rows locked for
 * long, and what a batch did stays done if a later one fails. A call another transaction holds
 * locked right now (an event of it being stored) is left for the next run: the scrub waits for nobody.
 *
 * Three passes, each finding its calls cheaply: by the call row, then by the event bodies that still
 * hold personal data, then by the transitions that still hold typed words (partial indexes). The
 * later ones find what the row no longer shows: an event stored after its call was scrubbed (older
 * than the call's last one, or a second close), data a later event left out of the row, a reason
 * typed on a follow-up after the call was scrubbed. None reads an old body that is already scrubbed.
 */
export async function scrubPersonalData(db: Db, before: Date, opts: { batchSize?: number; signal?: AbortSignal } = {}): Promise<ScrubResult> {
  const batchSize = opts.batchSize ?? 500
  // A shutdown (the signal) ends the run between batches: what is left waits for the next run.
  const stopped = () => opts.signal?.aborted === true
  const total: ScrubResult = { calls: 0, events: 0, reasons: 0 }
  const add = (done: ScrubResult) => {
    total.calls += done.calls
    total.events += done.events
    total.reasons += done.reasons
  }
  for (const holding of [rowHoldsPersonalData, eventHoldsPersonalData]) {
    for (;;) {
      if (stopped()) return total
      const done = await db.transaction().execute((trx) => scrubBatch(trx, before, batchSize, holding))
      add(done)
      // Each scrubbed call leaves the selection, so this ends; a short batch means nothing is left now.
      if (done.calls < batchSize) break
    }
  }
  // Typed words on calls the two passes no longer select, walked in the order of their partial index
  // a slice at a time: a large backlog (the rows migration 0016 gave a span) costs one pass over the
  // index, not one per batch. What is not due yet, or locked right now, is passed over until the next run.
  let after = 0
  for (;;) {
    if (stopped()) return total
    const slice = await db
      .selectFrom('assignment_transitions as t')
      .innerJoin('assignments as a', 'a.id', 't.assignment_id')
      .select(['t.id', 'a.call_id'])
      .where(TRANSITION_HOLDS_TYPED_TEXT)
      .where('t.id', '>', after)
      .orderBy('t.id')
      .limit(batchSize)
      .execute()
    if (!slice.length) break
    after = slice[slice.length - 1]!.id
    const ids = [...new Set(slice.map((r) => r.call_id))]
    add(await db.transaction().execute((trx) => scrubBatch(trx, before, ids.length, () => sql<boolean>`call_id = any(${ids}::text[])`)))
    if (slice.length < batchSize) break
  }
  return total
}

/**
 * An event body that still holds personal data: what the scrub removes from it, and the predicate of
 * the partial index call_events_personal_idx (migration 0015). Change both together, or each run
 * reads every old body instead of the index — and a key found here but not removed never ends a run.
 */
export const EVENT_HOLDS_PERSONAL_DATA = sql<boolean>`(body->'call' ?| array['caller', 'subject', 'description'] or body->'call'->'location' ?| array['address', 'lat', 'lon'])`

/**
 * A call row that still holds personal data: what the scrub clears in it, and the predicate of the
 * partial index calls_personal_idx (migration 0015). The same pact as above: a batch then reads the
 * calls not yet scrubbed (the last RETENTION_DAYS), not every call the service ever stored.
 */
export const ROW_HOLDS_PERSONAL_DATA = sql<boolean>`(caller is not null or subject is not null or description is not null or subject_person_id is not null or address_key is not null or location ?| array['address', 'lat', 'lon'])`

/**
 * A transition whose reason still holds words a console typed: the predicate of the partial index
 * assignment_transitions_typed_idx (migration 0016), under the same pact as the two above; cleared
 * by the scrub of the transition's call.
 */
export const TRANSITION_HOLDS_TYPED_TEXT = sql<boolean>`typed_from is not null`

type Holding = (eb: ExpressionBuilder<Database, 'calls'>) => Expression<SqlBool>

const rowHoldsPersonalData: Holding = () => ROW_HOLDS_PERSONAL_DATA

// The call ids first (a scan of the small index), then the calls by key: a semi-join could instead
// walk every call in the table to look each one up.
const eventHoldsPersonalData: Holding = (eb) => sql<boolean>`call_id = any(array(${eb.selectFrom('call_events').select('call_id').distinct().where(EVENT_HOLDS_PERSONAL_DATA)}))`

async function scrubBatch(trx: Transaction<Database>, before: Date, batchSize: number, holding: Holding): Promise<ScrubResult> {
  const due = trx
    .selectFrom('calls')
    .select('call_id')
    .where((eb) => eb.or([eb('closed_at', '<', before), eb.and([eb('closed_at', 'is', null), eb('updated_at', '<', before)])]))
    .where(holding)
    .orderBy('call_id')
    .limit(batchSize)
    .forUpdate()
    .skipLocked()
  const calls = await trx
    .updateTable('calls')
    .set({
      caller: null,
      subject: null,
      description: null,
      subject_person_id: null,
      // An unsalted hash of the street address: anyone with a list of addresses reads it back. Only
      // the 30-day history counts use it, and these calls are far older.
      address_key: null,
      // Keep the city (coarse, used by reports); drop the street address and coordinates.
      location: sql`case when location ? 'city' then jsonb_build_object('city', location->'city') else null end`,
    })
    .where('call_id', 'in', due)
    .returning('call_id')
    .execute()
  if (!calls.length) return { calls: 0, events: 0, reasons: 0 }
  const ids = calls.map((c) => c.call_id)
  const events = await trx
    .updateTable('call_events')
    .set({
      body: sql`(body #- '{call,caller}' #- '{call,subject}' #- '{call,description}' #- '{call,location,address}' #- '{call,location,lat}' #- '{call,location,lon}')`,
    })
    .where(sql<boolean>`call_id = any(${ids}::text[])`)
    // A body scrubbed before is not written again.
    .where(EVENT_HOLDS_PERSONAL_DATA)
    .executeTakeFirst()
  // Only the typed words go: 'declined: [removed]; escalated to co_response' still explains the history.
  const reasons = await trx
    .updateTable('assignment_transitions as t')
    .from('assignments as a')
    .set({ reason: sql`overlay(t.reason placing '[removed]' from t.typed_from for t.typed_length)`, typed_from: null, typed_length: null })
    .whereRef('a.id', '=', 't.assignment_id')
    .where(sql<boolean>`a.call_id = any(${ids}::text[])`)
    .where(TRANSITION_HOLDS_TYPED_TEXT)
    .executeTakeFirst()
  return { calls: calls.length, events: Number(events.numUpdatedRows), reasons: Number(reasons.numUpdatedRows) }
}
