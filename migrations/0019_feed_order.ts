import { sql, type Kysely } from 'kysely'

/**
 * The feed orders an assignment's changes by the writing transactions' ids, which callFirst (the
 * call's lock before the assignment's) keeps in the order the changes were made only when a writer
 * takes its id at the lock it waits for. Ingest locks all the calls of a batch in one statement:
 * it takes its id at the first call, then waits for another that a console's move holds (share
 * lock), and that move, with a higher id, commits first. The batch then cancels what the console
 * acknowledged, and the feed handed out the cancellation before the acknowledgement: a console
 * applying them in turn kept the assignment open while the listing said cancelled.
 *
 * A row is now stamped with its transaction's id or, if higher, the stamp of the assignment's
 * latest change (committed: every writer holds the assignment's row). A stamp at or above its own
 * transaction's id is as safe for the cursor: the row stays above the feed's horizon until that
 * transaction ends.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create or replace function cad_router_feed_stamp() returns trigger language plpgsql as $$
    begin
      -- The writing transaction's id, whatever the insert said (the cursor depends on it), or the
      -- assignment's latest stamp when that is higher: its changes reach the feed in the order made.
      -- (Latest by id, one step down the index: writers of an assignment take turns on its row.)
      new.feed_xid := greatest(pg_current_xact_id(),
        (select t.feed_xid from assignment_transitions t where t.assignment_id = new.assignment_id order by t.id desc limit 1));
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
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`create or replace function cad_router_feed_stamp() returns trigger language plpgsql as $$
    begin
      new.feed_xid := pg_current_xact_id();
      if new.feed_agency is null or new.feed_queue is null then
        select a.agency, a.queue into new.feed_agency, new.feed_queue from assignments a where a.id = new.assignment_id;
      end if;
      if new.feed_agency is null or new.feed_queue is null then
        raise exception 'assignment transition for % has no agency or queue for the feed', new.assignment_id;
      end if;
      return new;
    end $$`.execute(db)
}
