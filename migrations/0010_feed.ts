import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
//
// The console feed (GET /v1/assignments/stream, long-poll on the listing) reads assignment changes
// from assignment_transitions by a cursor that must never skip a row, even though ids are handed out
// at insert and rows become visible at commit, in another order. Each row is stamped here with the
// id of the transaction that wrote it (feed_xid, xid8: 64 bits, no wraparound). Readers order by
// (feed_xid, id) and read only rows with feed_xid below the oldest transaction still open: every
// transaction below it has ended, so no row can ever appear there later, and a cursor at the last
// row read is safe to resume from. The stamps are set by a trigger, so every writer (router,
// console moves, workers, whatever comes later) feeds the console without knowing about it.
//
// feed_agency and feed_queue keep the assignment's agency and queue at the time of the change, so
// a console's feed is filtered the same way on every read (and resuming never changes history).
//
// A statement-level trigger sends NOTIFY on the feed channel; Postgres delivers it at commit. One
// API instance relays it to Redis pub/sub, which wakes every instance's feed (see src/assignments/feed.ts).
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table assignment_transitions
    add column feed_xid xid8 not null default pg_current_xact_id(),
    add column feed_agency text,
    add column feed_queue text`.execute(db)
  await sql`update assignment_transitions t set feed_agency = a.agency, feed_queue = a.queue from assignments a where a.id = t.assignment_id`.execute(db)
  await sql`create index assignment_transitions_feed_idx on assignment_transitions (feed_xid, id)`.execute(db)

  await sql`create function cad_router_feed_stamp() returns trigger language plpgsql as $$
    begin
      -- Always the writing transaction's id, whatever the insert said: the cursor depends on it.
      new.feed_xid := pg_current_xact_id();
      -- A writer that creates the assignment in the same statement (ingest's CTE) cannot be seen
      -- from here, so it gives agency and queue itself; everyone else is looked up.
      if new.feed_agency is null or new.feed_queue is null then
        select a.agency, a.queue into new.feed_agency, new.feed_queue from assignments a where a.id = new.assignment_id;
      end if;
      -- A transition no console filter could match would be lost to every scoped console: refuse it.
      if new.feed_agency is null or new.feed_queue is null then
        raise exception 'assignment transition for % has no agency or queue for the feed', new.assignment_id;
      end if;
      return new;
    end $$`.execute(db)
  await sql`create trigger assignment_transitions_feed_stamp before insert on assignment_transitions
    for each row execute function cad_router_feed_stamp()`.execute(db)

  await sql`create function cad_router_feed_notify() returns trigger language plpgsql as $$
    begin
      perform pg_notify('cad_router_feed', '');
      return null;
    end $$`.execute(db)
  await sql`create trigger assignment_transitions_feed_notify after insert on assignment_transitions
    for each statement execute function cad_router_feed_notify()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger assignment_transitions_feed_notify on assignment_transitions`.execute(db)
  await sql`drop function cad_router_feed_notify()`.execute(db)
  await sql`drop trigger assignment_transitions_feed_stamp on assignment_transitions`.execute(db)
  await sql`drop function cad_router_feed_stamp()`.execute(db)
  await sql`drop index assignment_transitions_feed_idx`.execute(db)
  await sql`alter table assignment_transitions drop column feed_queue, drop column feed_agency, drop column feed_xid`.execute(db)
}
