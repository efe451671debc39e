import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('cad', 'console', 'supervisor', 'admin', 'auditor')`))
    // null: every agency (or every queue)
    .addColumn('agencies', sql`text[]`)
    .addColumn('queues', sql`text[]`)
    // Only a hash is kept: the key itself is shown once, when it is created.
    .addColumn('key_hash', 'text', (c) => c.notNull().unique())
    .addColumn('key_prefix', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz')
    .addColumn('revoked_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('audit_log')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('key_id', 'uuid')
    .addColumn('role', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_type', 'text', (c) => c.notNull())
    .addColumn('target_id', 'text')
    .addColumn('agency', 'text')
    .addColumn('source_ip', 'text')
    .addColumn('request_id', 'text')
    .addColumn('details', 'jsonb')
    .execute()
  await db.schema.createIndex('audit_log_action_idx').on('audit_log').columns(['action', 'id']).execute()
  await db.schema.createIndex('audit_log_actor_idx').on('audit_log').columns(['key_id', 'id']).execute()
  // Append-only: the log can grow, never change.
  await sql`
    create function audit_log_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_log is append-only';
    end $$`.execute(db)
  await sql`create trigger audit_log_no_change before update or delete on audit_log for each statement execute function audit_log_append_only()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('audit_log').execute()
  await sql`drop function if exists audit_log_append_only()`.execute(db)
  await db.schema.dropTable('api_keys').execute()
}
