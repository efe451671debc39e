import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The events whose body still holds personal data, by call, for the retention scrub
// (src/retention/scrub.ts): it finds them without reading every old body, and a body it has
// scrubbed leaves the index. Mostly the events of calls not yet due, so it stays small.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index call_events_personal_idx on call_events (call_id)
    where body->'call' ?| array['caller', 'subject', 'description'] or body->'call'->'location' ?| array['address', 'lat', 'lon']`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('call_events_personal_idx').execute()
}
