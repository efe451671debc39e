import type { Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// DESIGN rule 6 routes a repeat caller to their case manager: a case-management assignment names
// the case manager (the case link's case_manager) its decision saw, so its console and worker need
// not read the call's personal data and the link, which may have changed since. Null on other
// queues, and on case-management assignments made without an active link (a dispatcher override)
// or before this column. Adding a nullable column without a default rewrites nothing.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('assignments').addColumn('case_manager', 'text').execute()
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('assignments').dropColumn('case_manager').execute()
}
