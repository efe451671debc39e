import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The words a console typed on an assignment move (a reason given with acknowledge, accept,
// complete or decline) are free text about a person, and the retention scrub removes them
// (src/retention/scrub.ts). The service's own words around them stay, to explain the history, so a
// transition records where in its reason the typed text lies: typed_from (the first character,
// counted from 1 as Postgres counts) and typed_length (characters). Null: the service wrote it all.
// The partial index, in id order, is how the scrub walks what it has not removed yet.
//
// A writer that does not know the columns (rows stored before this migration, or a release before
// it still running during a deploy) gets its span worked out from what the service wrote then, by
// cad_router_typed_from(). Where the end of the typed text cannot be told apart (a decline's words
// followed by the service's outcome), the span runs to the end of the reason: the scrub then removes
// more than the typed words, never less. The service gives exact spans itself.
//
// The assignments a CRU decline created or changed before 13d5b3d quoted the desk's words, where
// police consoles read them: those words are removed now.
//
// On an install with many transitions this reads the table twice under its lock: run `npm run
// migrate` (60 s statement time-out) before starting the release, as for every migration.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table assignment_transitions
    add column typed_from integer,
    add column typed_length integer,
    add constraint assignment_transitions_typed_span
      check ((typed_from is null) = (typed_length is null) and typed_from >= 1 and typed_length >= 0)`.execute(db)
  await sql`create index assignment_transitions_typed_idx on assignment_transitions (id) where typed_from is not null`.execute(db)

  await sql`create function cad_router_typed_from(from_status text, to_status text, reason text) returns integer
    language sql immutable as $$
      select case
        when reason is null then null
        -- A console's acknowledge, accept or complete: all of the reason is what it typed. (The
        -- service's own rows in these statuses are role changes, from and to the same status.)
        when to_status in ('acknowledged', 'accepted', 'completed') and from_status is distinct from to_status then 1
        -- A decline: 'declined: <typed>; <outcome>'.
        when to_status = 'declined' and reason like 'declined: %' then 11
        -- A decline before migration 0008 stored the console's words alone; since, the service's
        -- 'declined; <outcome>' when none were given.
        when to_status = 'declined' and reason not like 'declined;%' then 1
      end
    $$`.execute(db)
  await sql`create function cad_router_typed_span() returns trigger language plpgsql as $$
    begin
      new.typed_from := cad_router_typed_from(new.from_status, new.to_status, new.reason);
      new.typed_length := char_length(new.reason) - new.typed_from + 1;
      return new;
    end $$`.execute(db)
  // Every assignment's creation and offer inserts a transition: the WHEN clause keeps the function
  // call off those, and off every row a writer gave its span.
  await sql`create trigger assignment_transitions_typed_span before insert on assignment_transitions
    for each row when (new.typed_from is null and new.reason is not null and new.to_status in ('acknowledged', 'accepted', 'completed', 'declined'))
    execute function cad_router_typed_span()`.execute(db)

  await sql`update assignment_transitions t set typed_from = s.f, typed_length = char_length(t.reason) - s.f + 1
    from (select id, cad_router_typed_from(from_status, to_status, reason) as f from assignment_transitions where reason is not null) s
    where s.id = t.id and s.f is not null`.execute(db)

  // Before 13d5b3d: 'escalated from cru assignment <id> (declined: <typed>)…' and
  // 'role primary → support: cru declined: <typed>…'.
  const removed = 'the rest was removed: it quoted the reason given'
  await sql`update assignment_transitions
    set reason = case when reason ~ '^escalated from ' then regexp_replace(reason, '[(]declined: .*$', ${`(declined; ${removed})`})
                      else regexp_replace(reason, ' declined: .*$', ${` declined (${removed})`}) end
    where to_status <> 'declined'
      and (reason ~ '^escalated from [^ ]+ assignment [^ ]+ [(]declined: ' or reason ~ '^role [^ ]+ → [^ ]+: [^ ]+ declined: ')`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger assignment_transitions_typed_span on assignment_transitions`.execute(db)
  await sql`drop function cad_router_typed_span()`.execute(db)
  await sql`drop function cad_router_typed_from(text, text, text)`.execute(db)
  await db.schema.dropIndex('assignment_transitions_typed_idx').execute()
  await sql`alter table assignment_transitions drop constraint assignment_transitions_typed_span, drop column typed_length, drop column typed_from`.execute(db)
}
