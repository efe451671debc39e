import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// Shadow mode: one candidate rule-set version decides every live call beside the active one; the
// difference is stored per decision. No personal data here: ids, codes and routes only.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('shadow_rule_set')
    // At most one shadow version: the table has one possible key.
    .addColumn('singleton', 'boolean', (c) => c.primaryKey().defaultTo(true).check(sql`singleton`))
    .addColumn('version', 'integer', (c) => c.notNull().references('rule_sets.version'))
    .addColumn('set_by', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('set_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createTable('shadow_decisions')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('decision_id', 'uuid', (c) => c.notNull().unique().references('decisions.id'))
    .addColumn('call_id', 'text', (c) => c.notNull())
    .addColumn('agency', 'text', (c) => c.notNull())
    .addColumn('event_type', 'text', (c) => c.notNull())
    .addColumn('live_version', 'integer', (c) => c.notNull())
    .addColumn('shadow_version', 'integer', (c) => c.notNull().references('rule_sets.version'))
    // The nature code after the shadow version's agency map.
    .addColumn('nature_code', 'text', (c) => c.notNull())
    .addColumn('live_route', 'text', (c) => c.notNull())
    .addColumn('shadow_route', 'text', (c) => c.notNull())
    .addColumn('live_rule_id', 'text', (c) => c.notNull())
    .addColumn('shadow_rule_id', 'text', (c) => c.notNull())
    .addColumn('changed', 'boolean', (c) => c.notNull())
    .addColumn('mental_health', 'boolean', (c) => c.notNull())
    .addColumn('shadow_assignments', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('shadow_decisions_version_idx').on('shadow_decisions').columns(['shadow_version', 'created_at']).execute()
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('shadow_decisions').execute()
  await db.schema.dropTable('shadow_rule_set').execute()
}
