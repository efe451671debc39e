import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// Re-sending lost jobs (src/queue/resend.ts): an assignment still queued long after its outbox row
// was sent, whose job Redis no longer holds to do, gets a new outbox row with a new job id.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  // 0: the first send; n: the n-th re-send (its job id ends in -r<n>).
  await db.schema.alterTable('outbox').addColumn('resend', 'integer', (c) => c.notNull().defaultTo(0)).execute()
  // The latest row of an assignment, for each queued assignment the sweep looks at.
  await sql`create index outbox_assignment_idx on outbox (assignment_id, id)`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('outbox_assignment_idx').execute()
  await db.schema.alterTable('outbox').dropColumn('resend').execute()
}
