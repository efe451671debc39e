import type { Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The trace context of the request that wrote an outbox row, so the trace continues through the
// relay to the worker (src/telemetry/tracing.ts). Null when tracing is off.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('outbox').addColumn('trace_context', 'text').execute()
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('outbox').dropColumn('trace_context').execute()
}
