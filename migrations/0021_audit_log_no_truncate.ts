import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// 0004 made the audit log append-only against update and delete; a truncate fires neither, so
// `truncate audit_log` (an operator's cleanup script, a test habit run on the wrong database)
// emptied it. The same function refuses it. A superuser can still drop the trigger: this guards
// against accidents, not against the database's owner.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create trigger audit_log_no_truncate before truncate on audit_log for each statement execute function audit_log_append_only()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists audit_log_no_truncate on audit_log`.execute(db)
}
