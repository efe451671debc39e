import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// Reads that ran often and read more rows every day the service ran: two of 0006's partial indexes
// no longer matched them, and some had none (bench/history.ts measures a year).
//
// Overdue follow-ups are found every 15 s by the lifecycle sweep and at every metrics scrape. 0006's
// index held every follow-up ever made (due_at where queue = 'follow_up'), so both read all the
// past-due ones, the finished included: about 40,000 rows a year at one follow-up per
// mental-health call, 60–135 ms a read. This one holds only the open ones (the state machine's
// open statuses): a follow-up leaves it when it ends, so it stays small however long the service
// runs.
//
// Escalation records: since declines count as escalations, the reports ask for three statuses and
// 0006's index of two could not serve them; the report read every transition ever written.
//
// Police fallbacks (DESIGN rule 7: police because CRU was not available) and acceptances (a police
// field response): the summary asks which calls of its range had one. Only those decisions and
// transitions are in these indexes, so they cost nothing to the others' inserts.
//
// Console listings of open assignments (GET /v1/assignments?status=acknowledged,accepted, say) page
// by seq: without an index of open assignments Postgres read every assignment ever made to find
// the few still open (135 ms over a year of 250,000 calls; 0.13 ms with it). status is already in
// other partial indexes' predicates, so its updates were not HOT before either.
//
// A plain create index holds writes to the table while it is built: well under a second a year of
// history on a small machine (bench/history.ts), so no concurrent build (which cannot run in the
// migration's transaction).
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index assignments_open_follow_up_due_idx on assignments (due_at)
    where queue = 'follow_up' and status in ('reserved', 'queued', 'offered', 'acknowledged', 'accepted')`.execute(db)
  await db.schema.dropIndex('assignments_follow_up_due_idx').execute()
  await sql`create index assignment_transitions_escalations_at_idx on assignment_transitions (at)
    where to_status in ('escalated', 'expired', 'declined')`.execute(db)
  await db.schema.dropIndex('assignment_transitions_escalation_idx').execute()
  await sql`create index decisions_police_fallback_idx on decisions (created_at)
    where route = 'police' and jsonb_typeof(outcome->'fallback') = 'object'`.execute(db)
  await sql`create index assignment_transitions_accepted_at_idx on assignment_transitions (at) where to_status = 'accepted'`.execute(db)
  await sql`create index assignments_open_seq_idx on assignments (seq)
    where status in ('reserved', 'queued', 'offered', 'acknowledged', 'accepted')`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('assignments_open_seq_idx').execute()
  await db.schema.dropIndex('assignment_transitions_accepted_at_idx').execute()
  await db.schema.dropIndex('decisions_police_fallback_idx').execute()
  await sql`create index assignment_transitions_escalation_idx on assignment_transitions (at) where to_status in ('escalated', 'expired')`.execute(db)
  await db.schema.dropIndex('assignment_transitions_escalations_at_idx').execute()
  await sql`create index assignments_follow_up_due_idx on assignments (due_at) where queue = 'follow_up'`.execute(db)
  await db.schema.dropIndex('assignments_open_follow_up_due_idx').execute()
}
