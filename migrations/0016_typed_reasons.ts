import { sql, type Kysely } from 'kysely'

// Frozen in time: this file imports nothing from the application.
// The words a console typed on an assignment move (a reason given with acknowledge, accept,
// complete or decline) are free text about a person, and the retention scrub removes them
// (src/retention/scrub.ts). The service's own words around them stay, to explain the history, so a
// transition records where in its reason the typed text lies: typed_from (the first character,
// counted from 1 as Postgres counts) and typed_length (characters). Null: the service wrote it all.
// The partial index is how the scrub finds what it has not removed yet.
//
// Rows written before this migration carry no span, so it is worked out here from what the
// service wrote then. Where the end of the typed text cannot be told apart (a decline's words
// followed by the service's outcome), the span runs to the end of the reason: the scrub then removes
// more than the typed words, never less. The assignments a CRU decline created or changed before
// 13d5b3d quoted the desk's words too, where police consoles read them: those words are removed now.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations must not depend on today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table assignment_transitions
    add column typed_from integer,
    add column typed_length integer,
    add constraint assignment_transitions_typed_span
      check ((typed_from is null) = (typed_length is null) and typed_from >= 1 and typed_length >= 0)`.execute(db)
  await sql`create index assignment_transitions_typed_idx on assignment_transitions (assignment_id) where typed_from is not null`.execute(db)

  // A console's acknowledge, accept or complete: the reason is what it typed, all of it. (The
  // service's own rows that end in these statuses are role changes, from and to the same status.)
  await sql`update assignment_transitions set typed_from = 1, typed_length = char_length(reason)
    where reason is not null and to_status in ('acknowledged', 'accepted', 'completed') and from_status is distinct from to_status`.execute(db)
  // A decline: 'declined: <typed>; <outcome>'.
  await sql`update assignment_transitions set typed_from = 11, typed_length = char_length(reason) - 10
    where to_status = 'declined' and reason like 'declined: %'`.execute(db)
  // Before 13d5b3d the other assignments of the call quoted the words: 'escalated from cru assignment
  // <id> (declined: <typed>)…' and 'role primary → support: cru declined: <typed>…'.
  const removed = 'the rest was removed: it quoted the reason given'
  await sql`update assignment_transitions set reason = regexp_replace(reason, '[(]declined: .*$', ${`(declined; ${removed})`})
    where to_status <> 'declined' and reason ~ '^escalated from [^ ]+ assignment [^ ]+ [(]declined: '`.execute(db)
  await sql`update assignment_transitions set reason = regexp_replace(reason, ' declined: .*$', ${` declined (${removed})`})
    where to_status <> 'declined' and reason ~ '^role [^ ]+ → [^ ]+: [^ ]+ declined: '`.execute(db)
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('assignment_transitions_typed_idx').execute()
  await sql`alter table assignment_transitions drop constraint assignment_transitions_typed_span, drop column typed_length, drop column typed_from`.execute(db)
}
