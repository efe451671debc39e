import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The assignment lifecycle: reserved follow-ups, acknowledgement deadlines, escalation lineage.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table assignments drop constraint if exists assignments_status_check`.execute(db)
  await sql`alter table assignments add constraint assignments_status_check check (status in
    ('reserved', 'queued', 'offered', 'acknowledged', 'accepted', 'completed', 'declined', 'cancelled', 'escalated', 'expired'))`.execute(db)
  await db.schema
    .alterTable('assignments')
    // A reserved follow-up is offered at this time (due_at stays the time it must be done by).
    .addColumn('reserved_until', 'timestamptz')
    // Set when the assignment is offered: not acknowledged by then, it escalates.
    .addColumn('ack_deadline_at', 'timestamptz')
    // The assignment whose decline or missed deadline created this one.
    .addColumn('escalated_from', 'uuid', (c) => c.references('assignments.id'))
    .execute()
  // The safety-net sweep: offered assignments past their deadline, reserved ones past their time.
  await sql`create index assignments_ack_deadline_idx on assignments (ack_deadline_at) where status in ('queued', 'offered')`.execute(db)
  await sql`create index assignments_reserved_idx on assignments (reserved_until) where status = 'reserved'`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('assignments_reserved_idx').execute()
  await db.schema.dropIndex('assignments_ack_deadline_idx').execute()
  await db.schema.alterTable('assignments').dropColumn('escalated_from').dropColumn('ack_deadline_at').dropColumn('reserved_until').execute()
  await sql`alter table assignments drop constraint if exists assignments_status_check`.execute(db)
  await sql`alter table assignments add constraint assignments_status_check check (status in
    ('queued', 'offered', 'acknowledged', 'accepted', 'completed', 'declined', 'cancelled'))`.execute(db)
}
