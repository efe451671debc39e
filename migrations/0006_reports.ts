import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// Indexes for the supervisor reports and the metrics scrape (which runs every few seconds).
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  // Reports select calls and assignments by when they were created.
  await db.schema.createIndex('calls_created_idx').on('calls').columns(['created_at', 'agency']).execute()
  await db.schema.createIndex('assignments_created_idx').on('assignments').columns(['created_at', 'agency']).execute()
  // Escalation records are few among many transitions.
  await sql`create index assignment_transitions_escalation_idx on assignment_transitions (at) where to_status in ('escalated', 'expired')`.execute(db)
  // Queue depth and age: only the assignments still waiting for a responder.
  await sql`create index assignments_waiting_idx on assignments (queue, created_at) where status in ('queued', 'offered', 'reserved')`.execute(db)
  // Overdue follow-ups.
  await sql`create index assignments_follow_up_due_idx on assignments (due_at) where queue = 'follow_up'`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  for (const i of ['assignments_follow_up_due_idx', 'assignments_waiting_idx', 'assignment_transitions_escalation_idx', 'assignments_created_idx', 'calls_created_idx']) {
    await db.schema.dropIndex(i).execute()
  }
}
