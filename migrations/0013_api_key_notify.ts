import { sql, type Kysely } from 'kysely'

/**
 * API processes cache key lookups for a few seconds (src/auth/key-cache.ts). A trigger NOTIFYs at
 * commit of every change of a key — revocation, or any other update or deletion — with the key's
 * id, so every process drops its cached copy at once, whoever made the change: the API, the keys
 * CLI, or an operator in psql. A truncate names no key: the processes drop every cached key.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations run before the schema type exists
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function cad_router_api_key_notify() returns trigger language plpgsql as $$
    begin
      if tg_level = 'ROW' then
        perform pg_notify('cad_router_api_keys', old.id::text);
      else
        perform pg_notify('cad_router_api_keys', '');
      end if;
      return null;
    end $$`.execute(db)
  await sql`create trigger api_key_notify after update or delete on api_keys for each row execute function cad_router_api_key_notify()`.execute(db)
  await sql`create trigger api_key_notify_truncate after truncate on api_keys for each statement execute function cad_router_api_key_notify()`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists api_key_notify_truncate on api_keys`.execute(db)
  await sql`drop trigger if exists api_key_notify on api_keys`.execute(db)
  await sql`drop function if exists cad_router_api_key_notify()`.execute(db)
}
