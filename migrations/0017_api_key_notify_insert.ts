import { sql, type Kysely } from 'kysely'

/**
 * API processes also remember refused keys for a few seconds (src/auth/key-cache.ts), so a key
 * presented before its row exists — ADMIN_API_KEY on a process that starts before the one that
 * stores it, a key restored by SQL — would stay refused until that lapsed: 0013 NOTIFYs on update,
 * delete and truncate only. Inserts now NOTIFY too, with '+' and the new key's id: the processes
 * forget their refusals and keep the keys they hold (a release before this one reads the payload as
 * an id that names no key, and drops nothing).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations run before the schema type exists
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function cad_router_api_key_notify() returns trigger language plpgsql as $$
    begin
      if tg_level = 'ROW' then
        perform pg_notify('cad_router_api_keys', case tg_op when 'INSERT' then '+' || new.id::text else old.id::text end);
      else
        perform pg_notify('cad_router_api_keys', '');
      end if;
      return null;
    end $$`.execute(db)
  await sql`create trigger api_key_notify_insert after insert on api_keys for each row execute function cad_router_api_key_notify()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  // The function stays as up() left it: for 0013's update, delete and truncate triggers it sends
  // what 0013's own did.
  await sql`drop trigger if exists api_key_notify_insert on api_keys`.execute(db)
}
