import { sql } from 'kysely'
import type { Db } from '../db/connect.js'

export interface ScrubResult {
  calls: number
  events: number
}

/**
 * Removes personal data (caller, subject, description, street address, county person id) from calls
 * closed — or last touched — before `before`, in the call row and in the stored event bodies. What
 * the statistics need stays: agency, city, nature code, priority, flags, route, decisions,
 * assignments and times. Idempotent: a scrubbed call is not touched again.
 */
export async function scrubPersonalData(db: Db, before: Date): Promise<ScrubResult> {
  return db.transaction().execute(async (trx) => {
    const calls = await trx
      .updateTable('calls')
      .set({
        caller: null,
        subject: null,
        description: null,
        subject_person_id: null,
        // Keep the city (coarse, used by reports); drop the street address and coordinates.
        location: sql`case when location ? 'city' then jsonb_build_object('city', location->'city') else null end`,
      })
      .where((eb) => eb.or([eb('closed_at', '<', before), eb.and([eb('closed_at', 'is', null), eb('updated_at', '<', before)])]))
      .where((eb) => eb.or([eb('caller', 'is not', null), eb('subject', 'is not', null), eb('description', 'is not', null), eb('subject_person_id', 'is not', null), sql<boolean>`location ?| array['address', 'lat', 'lon']`]))
      .returning('call_id')
      .execute()
    if (!calls.length) return { calls: 0, events: 0 }
    const events = await trx
      .updateTable('call_events')
      .set({
        body: sql`(body #- '{call,caller}' #- '{call,subject}' #- '{call,description}' #- '{call,location,address}' #- '{call,location,lat}' #- '{call,location,lon}')`,
      })
      .where('call_id', 'in', calls.map((c) => c.call_id))
      .executeTakeFirst()
    return { calls: calls.length, events: Number(events.numUpdatedRows) }
  })
}
