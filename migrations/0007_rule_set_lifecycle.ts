import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('rule_sets')
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('draft').check(sql`status in ('draft', 'active', 'retired')`))
    .addColumn('created_by', 'text', (c) => c.notNull().defaultTo('system'))
    .addColumn('activated_at', 'timestamptz')
    .execute()
  // At most one active rule set: activation retires the old one in the same transaction.
  await sql`create unique index rule_sets_one_active on rule_sets ((true)) where status = 'active'`.execute(db)
  // A database from before rule sets had a lifecycle routes with its newest stored version.
  await sql`update rule_sets set status = 'retired' where version < (select max(version) from rule_sets)`.execute(db)
  await sql`update rule_sets set status = 'active', activated_at = created_at where version = (select max(version) from rule_sets)`.execute(db)

  await db.schema
    .createTable('rule_set_activations')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('initial', 'activate', 'rollback')`))
    .addColumn('from_version', 'integer', (c) => c.references('rule_sets.version'))
    .addColumn('to_version', 'integer', (c) => c.notNull().references('rule_sets.version'))
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('key_id', 'uuid')
    .addColumn('reason', 'text', (c) => c.notNull())
    .execute()
  await db.schema.createIndex('rule_set_activations_at_idx').on('rule_set_activations').column('id').execute()
  await sql`
    insert into rule_set_activations (at, kind, from_version, to_version, actor, reason)
    select created_at, 'initial', null, version, 'system', 'active before rule sets had a lifecycle (migration 0007)'
    from rule_sets where status = 'active'`.execute(db)

  // CRU capacity (DESIGN rule 7) counts open CRU assignments per agency on every routed event.
  await sql`
    create index assignments_open_cru_idx on assignments (agency)
    where queue = 'cru' and status in ('queued', 'offered', 'acknowledged', 'accepted')`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists assignments_open_cru_idx`.execute(db)
  await db.schema.dropTable('rule_set_activations').execute()
  await sql`drop index if exists rule_sets_one_active`.execute(db)
  await db.schema.alterTable('rule_sets').dropColumn('status').dropColumn('created_by').dropColumn('activated_at').execute()
}
