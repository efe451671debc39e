import type { Executor } from '../calls/repository.js'
import type { EventType } from '../routing/index.js'

/** What the mapping needs to know before it can name the event type of a document. */
export async function seenBefore(db: Executor, callId: string, eventId: string): Promise<{ callKnown: boolean; storedType?: EventType }> {
  const [call, event] = await Promise.all([
    db.selectFrom('calls').select('decision_id').where('call_id', '=', callId).executeTakeFirst(),
    db.selectFrom('call_events').select('type').where('event_id', '=', eventId).executeTakeFirst(),
  ])
  return { callKnown: Boolean(call?.decision_id), ...(event ? { storedType: event.type as EventType } : {}) }
}
