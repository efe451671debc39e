import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The calls and the events that still hold personal data, for the retention scrub
// (src/retention/scrub.ts): it finds them without walking every call or reading every old body, and
// what it has scrubbed leaves the index. Mostly the calls of the last RETENTION_DAYS, so both stay
// small however long the service runs.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index call_events_personal_idx on call_events (call_id)
    where body->'call' ?| array['caller', 'subject', 'description'] or body->'call'->'location' ?| array['address', 'lat', 'lon']`.execute(db)
  await sql`create index calls_personal_idx on calls (call_id)
    where caller is not null or subject is not null or description is not null or subject_person_id is not null
      or address_key is not null or location ?| array['address', 'lat', 'lon']`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('calls_personal_idx').execute()
  await db.schema.dropIndex('call_events_personal_idx').execute()
}
