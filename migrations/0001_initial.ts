import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('rule_sets')
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('document', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createTable('calls')
    .addColumn('call_id', 'text', (c) => c.primaryKey())
    .addColumn('agency', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('open', 'closed')`))
    .addColumn('nature_code', 'text', (c) => c.notNull())
    .addColumn('priority', 'integer', (c) => c.notNull())
    .addColumn('flags', 'jsonb', (c) => c.notNull())
    // Personal data lives only in these columns (and in call_events.body), so retention can scrub it.
    .addColumn('location', 'jsonb')
    .addColumn('caller', 'jsonb')
    .addColumn('subject', 'jsonb')
    .addColumn('description', 'text')
    .addColumn('subject_person_id', 'text')
    .addColumn('address_key', 'text')
    .addColumn('dispatcher_override', 'text')
    .addColumn('disposition', 'text')
    // Sticky: once any event of the call carried a mental-health indicator, the call has one (rule 8).
    .addColumn('mental_health', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('route', 'text', (c) => c.notNull())
    .addColumn('decision_id', 'uuid')
    .addColumn('last_occurred_at', 'timestamptz', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('closed_at', 'timestamptz')
    .execute()
  await db.schema.createIndex('calls_subject_idx').on('calls').columns(['subject_person_id', 'created_at']).where('subject_person_id', 'is not', null).execute()
  await db.schema.createIndex('calls_address_idx').on('calls').columns(['address_key', 'created_at']).where('address_key', 'is not', null).execute()

  await db.schema
    .createTable('call_events')
    .addColumn('event_id', 'text', (c) => c.primaryKey())
    .addColumn('call_id', 'text', (c) => c.notNull().references('calls.call_id'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('occurred_at', 'timestamptz', (c) => c.notNull())
    .addColumn('received_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('body_hash', 'text', (c) => c.notNull())
    .addColumn('body', 'jsonb', (c) => c.notNull())
    // False when the event arrived after a later one of the same call and changed nothing.
    .addColumn('applied', 'boolean', (c) => c.notNull())
    .addColumn('decision_id', 'uuid')
    .execute()
  await db.schema.createIndex('call_events_call_idx').on('call_events').columns(['call_id', 'received_at']).execute()

  await db.schema
    .createTable('decisions')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('call_id', 'text', (c) => c.notNull().references('calls.call_id'))
    .addColumn('event_id', 'text', (c) => c.notNull().unique().references('call_events.event_id'))
    .addColumn('route', 'text', (c) => c.notNull())
    .addColumn('rule_set_version', 'integer', (c) => c.notNull().references('rule_sets.version'))
    .addColumn('rule_id', 'text', (c) => c.notNull())
    .addColumn('explanation', 'text', (c) => c.notNull())
    // What the engine saw and what it answered, so the decision can be replayed and explained.
    .addColumn('facts', 'jsonb', (c) => c.notNull())
    .addColumn('outcome', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('decisions_call_idx').on('decisions').columns(['call_id', 'created_at']).execute()

  await db.schema
    .createTable('assignments')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    // Listing order and pagination cursor: strictly increasing, never reused.
    .addColumn('seq', 'bigint', (c) => c.notNull().unique().generatedAlwaysAsIdentity())
    .addColumn('call_id', 'text', (c) => c.notNull().references('calls.call_id'))
    .addColumn('decision_id', 'uuid', (c) => c.notNull().references('decisions.id'))
    .addColumn('agency', 'text', (c) => c.notNull())
    .addColumn('queue', 'text', (c) => c.notNull().check(sql`queue in ('police', 'cru', 'ems', 'case_management', 'follow_up')`))
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('primary', 'support')`))
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('queued', 'offered', 'acknowledged', 'accepted', 'completed', 'declined', 'cancelled')`),
    )
    .addColumn('disposition', 'text')
    .addColumn('due_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('assignments_call_idx').on('assignments').column('call_id').execute()
  await db.schema.createIndex('assignments_listing_idx').on('assignments').columns(['queue', 'agency', 'seq']).execute()

  await db.schema
    .createTable('assignment_transitions')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('assignment_id', 'uuid', (c) => c.notNull().references('assignments.id'))
    .addColumn('from_status', 'text')
    .addColumn('to_status', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('assignment_transitions_assignment_idx').on('assignment_transitions').columns(['assignment_id', 'id']).execute()

  await db.schema
    .createTable('outbox')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('assignment_id', 'uuid', (c) => c.notNull().references('assignments.id'))
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull().unique())
    .addColumn('payload', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('sent_at', 'timestamptz')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .execute()
  await sql`create index outbox_pending_idx on outbox (id) where sent_at is null`.execute(db)

  await db.schema
    .createTable('case_links')
    .addColumn('person_id', 'text', (c) => c.primaryKey())
    .addColumn('case_manager', 'text', (c) => c.notNull())
    .addColumn('active', 'boolean', (c) => c.notNull().defaultTo(true))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['case_links', 'outbox', 'assignment_transitions', 'assignments', 'decisions', 'call_events', 'calls', 'rule_sets']) {
    await db.schema.dropTable(t).execute()
  }
}
