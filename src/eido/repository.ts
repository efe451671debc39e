import { sql } from 'kysely'
import type { Executor } from '../calls/repository.js'
import type { EventType } from '../routing/index.js'

/**
 * What the mapping needs to know before it can name the event type of a document. One statement,
 * so both answers come from one snapshot: read apart, a concurrent first post of the same document
 * could commit in between, and the call would look known while its event did not (a 409).
 */
export async function seenBefore(db: Executor, callId: string, eventId: string): Promise<{ callKnown: boolean; storedType?: EventType }> {
  const { rows } = await sql<{ call_known: boolean; stored_type: string | null }>`
    select exists (select 1 from calls where call_id = ${callId} and decision_id is not null) as call_known,
           (select type from call_events where event_id = ${eventId}) as stored_type`.execute(db)
  const row = rows[0]!
  return { callKnown: row.call_known, ...(row.stored_type ? { storedType: row.stored_type as EventType } : {}) }
}
