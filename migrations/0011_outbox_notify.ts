import { sql, type Kysely } from 'kysely'

/**
 * The outbox relay is woken by NOTIFY when a transaction that wrote outbox rows commits. A
 * statement trigger sends it, so every writer (ingest, escalation, anything later) wakes the relay
 * without a round trip of its own and without remembering to. NOTIFY is delivered at commit and
 * collapsed within a transaction, so one per statement costs nothing extra.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations run before the schema type exists
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function cad_router_outbox_notify() returns trigger language plpgsql as $$
    begin
      perform pg_notify('cad_router_outbox', '');
      return null;
    end $$`.execute(db)
  await sql`create trigger outbox_notify after insert on outbox for each statement execute function cad_router_outbox_notify()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists outbox_notify on outbox`.execute(db)
  await sql`drop function if exists cad_router_outbox_notify()`.execute(db)
}
