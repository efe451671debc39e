import { sql, type RawBuilder, type Transaction } from 'kysely'
import type { Executor } from '../db/connect.js'
import { fixed, prepared } from '../db/prepared.js'
import type { CallRow, Database } from '../db/schema.js'
import type { AssignmentSummary } from '../assignments/schemas.js'
import type { CruCapacity, RoutingDecision } from '../routing/index.js'
import type { ExistingAssignment } from './plan.js'
import type { CallEvent, DecisionView } from './schemas.js'
import { CRU_HOLDING_STATUSES, OPEN_STATUSES } from '../assignments/state-machine.js'

export type { Executor }

// Also named in migrations/0011_outbox_notify.ts, whose trigger sends it.
export const OUTBOX_CHANNEL = 'cad_router_outbox'

/**
 * What ingest needs of a call row as it was before the batch; `older`: the posted event is dated
 * before its last applied one, compared in Postgres to the microsecond (a JS Date keeps milliseconds,
 * and idempotency tells events a microsecond apart).
 */
export type LockedCall = Pick<CallRow, 'call_id' | 'agency' | 'status' | 'decision_id' | 'closed_at' | 'disposition' | 'mental_health' | 'route'> & {
  older: boolean
  /** The posted event's time and the call's last applied one, in UTC to the microsecond (for explanations). */
  posted_at_text: string
  last_occurred_text: string
}

/** An event already stored, with its call's agency now: what a repeat of it is answered from. */
export interface StoredEvent {
  event_id: string
  call_id: string
  type: string
  body_hash: string
  decision_id: string | null
  applied: boolean
  agency: string
}

// ISO 8601 in UTC with microseconds, as Postgres keeps them (a JS Date has milliseconds).
const MICROSECONDS = sql.lit('YYYY-MM-DD"T"HH24:MI:SS.US"Z"')

/**
 * The first statement of an ingest batch, one round trip: finds the batch's events that are
 * already stored (repeats), then creates the call rows of the others that are new and locks every
 * one of them for the rest of the transaction, returning each as it was before this batch (the
 * no-op update is what takes the lock and makes RETURNING see an existing row). A repeat neither
 * creates nor locks a call: the call its body names may not exist (a conflicting repeat). Rows are
 * locked in call_id order, so two batches that share calls (two API instances) queue behind each
 * other instead of deadlocking. `rows[i]` is the call of `eventIds[i]`; no two rows share a call.
 */
export async function lockCallsOfNewEvents(
  trx: Transaction<Database>,
  eventIds: readonly string[],
  rows: readonly JsonRow<'calls'>[],
): Promise<{ calls: Map<string, LockedCall>; stored: Map<string, StoredEvent> }> {
  const sorted = [...rows].sort((a, b) => (String(a.call_id) < String(b.call_id) ? -1 : String(a.call_id) > String(b.call_id) ? 1 : 0))
  // A row per locked call (stored false), or per repeat (stored true: only call_id, agency and the event's decision_id are set).
  const { rows: out } = await prepared(sql<LockedCall & { stored: boolean; event_id: string | null; event_type: string | null; body_hash: string | null; applied: boolean | null }>`
    with posted as (
      select * from unnest(${eventIds}::text[], ${rows.map((r) => String(r.call_id))}::text[], ${rows.map((r) => (r.last_occurred_at instanceof Date ? r.last_occurred_at.toISOString() : String(r.last_occurred_at)))}::timestamptz[])
        as p(event_id, call_id, occurred_at)
    ), stored as (
      select e.event_id, e.call_id, e.type, e.body_hash, e.decision_id, e.applied, c.agency, p.call_id as posted_call_id
      from posted p
        join call_events e on e.event_id = p.event_id
        join calls c on c.call_id = e.call_id
    ), locked as (
      ${insertRows('calls', ['call_id', 'agency', 'status', 'nature_code', 'priority', 'flags', 'route', 'last_occurred_at', 'subject_person_id', 'address_key'], sorted, sql`where call_id not in (select posted_call_id from stored)`)}
      on conflict (call_id) do update set call_id = excluded.call_id
      returning call_id, agency, status, decision_id, last_occurred_at, closed_at, disposition, mental_health, route
    )
    select false as stored, l.call_id, l.agency, l.status, l.decision_id, l.closed_at, l.disposition, l.mental_health, l.route,
      p.occurred_at < l.last_occurred_at as older,
      to_char(p.occurred_at at time zone 'UTC', ${MICROSECONDS}) as posted_at_text,
      to_char(l.last_occurred_at at time zone 'UTC', ${MICROSECONDS}) as last_occurred_text,
      null::text as event_id, null::text as event_type, null::text as body_hash, null::boolean as applied
    from locked l join posted p on p.call_id = l.call_id
    union all
    select true, call_id, agency, null, decision_id, null, null, null, null, null, null, null, event_id, type, body_hash, applied
    from stored`).execute(trx)
  const calls = new Map<string, LockedCall>()
  const stored = new Map<string, StoredEvent>()
  for (const { stored: isStored, event_id, event_type, body_hash, applied, ...call } of out) {
    if (isStored) stored.set(event_id!, { event_id: event_id!, call_id: call.call_id, type: event_type!, body_hash: body_hash!, decision_id: call.decision_id, applied: applied!, agency: call.agency })
    else calls.set(call.call_id, call)
  }
  return { calls, stored }
}

/**
 * Open CRU assignments: the statuses that count against a team's capacity. Written as literals, not
 * parameters: the planner uses the partial index assignments_open_cru_idx (migration 0007) only for this predicate.
 */
const OPEN_CRU = sql<boolean>`queue = 'cru' and status in (${sql.raw(CRU_HOLDING_STATUSES.map((s) => `'${s}'`).join(', '))})`

/** The first key of the two-key advisory locks on CRU teams (the two-key space is apart from the one-key locks). */
const CRU_TEAM_LOCK_SPACE = 7001

/**
 * Serialises, until commit, the ingests that count one CRU team's open assignments, so two calls
 * on two API instances cannot both take the team's last place (DESIGN rule 7). Teams are locked in
 * one order, so batches that share several never deadlock. Must run before the counts are read:
 * each statement sees what committed before it started.
 */
export async function lockCruTeams(trx: Transaction<Database>, teams: readonly string[]): Promise<void> {
  if (!teams.length) return
  await sql`select pg_advisory_xact_lock(${CRU_TEAM_LOCK_SPACE}, hashtext(t)) from unnest(${[...teams].sort()}::text[]) t order by t`.execute(trx)
}

export interface ContextQuery {
  callId: string
  personId: string | null
  addressKey: string | null
  /** Prior calls are counted from here on (DESIGN rule 6's window). */
  since: Date
  /** ...and before this (evaluate at a past instant); unset: up to now (ingest). */
  until?: Date
  /** Calls not to count as prior ones besides the call itself (a batch's later new calls). */
  exclude: string[]
  /** The CRU team whose open assignments to count (DESIGN rule 7); null: no count. */
  capacity: CruCapacity | null
  /** Also read the call's assignments (false for a call this batch created). */
  assignments: boolean
}

export interface CallContext {
  priorSubject: number
  priorAddress: number
  caseManagerActive: boolean
  /** The active link's case manager (DESIGN rule 6: whom a case-management assignment is for); null without one. */
  caseManager: string | null
  /** Open CRU assignments of other calls counting against `capacity`; undefined without one. */
  openCru: number | undefined
  /** The call's assignments, each with the agency that holds it (whose CRU team it counts against). */
  assignments: (ExistingAssignment & { agency: string })[]
}

/**
 * What routing needs to know about each call beyond its event, in one round trip for any number
 * of calls: prior calls of the subject and at the address in the window, an active case link and
 * its case manager (DESIGN rule 6), open CRU assignments against the team's capacity (rule 7), the call's own
 * assignments. Ingest reads it after locking the calls; evaluate and replay read it for one call.
 */
export async function readCallContexts(db: Executor, queries: readonly ContextQuery[]): Promise<CallContext[]> {
  if (!queries.length) return []
  const input = queries.map((q, i) => ({
    i,
    call_id: q.callId,
    person: q.personId,
    addr: q.addressKey,
    since: q.since,
    until: q.until ?? null,
    exclude: q.exclude,
    cap_agencies: q.capacity?.agencies ?? null,
    cap_except: q.capacity?.except ?? null,
    with_assignments: q.assignments,
  }))
  const { rows } = await prepared(sql<{ i: number; subject: number; address: number; cm: string | null; open_cru: number | null; assignments: (ExistingAssignment & { agency: string })[] | null }>`
    select u.i,
      case when u.person is null then 0 else
        (select count(*) from calls c where c.subject_person_id = u.person and c.call_id <> u.call_id and c.call_id <> all(u.exclude) and c.created_at >= u.since and c.created_at < coalesce(u.until, 'infinity')) end as subject,
      case when u.addr is null then 0 else
        (select count(*) from calls c where c.address_key = u.addr and c.call_id <> u.call_id and c.call_id <> all(u.exclude) and c.created_at >= u.since and c.created_at < coalesce(u.until, 'infinity')) end as address,
      -- The active link's case manager, in the one primary-key lookup the fact needs (null: no active link, or no subject).
      (select l.case_manager from case_links l where l.person_id = u.person and l.active) as cm,
      -- Two counts, not one with the choice inside: a generic plan cannot use the index on agency
      -- through a CASE, and read every open CRU assignment of the county for each call.
      case when u.cap_agencies is null then null
        when u.cap_except then
          (select count(*) from assignments a where ${OPEN_CRU} and a.call_id <> u.call_id and a.agency <> all(u.cap_agencies))
        else
          (select count(*) from assignments a where ${OPEN_CRU} and a.call_id <> u.call_id and a.agency = any(u.cap_agencies)) end as open_cru,
      case when u.with_assignments then
        (select coalesce(json_agg(json_build_object('id', a.id, 'queue', a.queue, 'role', a.role, 'status', a.status, 'agency', a.agency) order by a.seq), '[]')
           from assignments a where a.call_id = u.call_id) end as assignments
    from json_to_recordset(${JSON.stringify(input)}::json)
      as u(i int, call_id text, person text, addr text, since timestamptz, until timestamptz, exclude text[], cap_agencies text[], cap_except boolean, with_assignments boolean)
    order by u.i`).execute(db)
  return rows.map((r) => ({
    priorSubject: Number(r.subject),
    priorAddress: Number(r.address),
    caseManagerActive: r.cm !== null,
    caseManager: r.cm,
    openCru: r.open_cru === null ? undefined : Number(r.open_cru),
    assignments: r.assignments ?? [],
  }))
}

/** Locks an existing call row for the rest of the transaction (events of one call run one at a time). */
export function lockCall(trx: Transaction<Database>, callId: string) {
  return trx.selectFrom('calls').selectAll().where('call_id', '=', callId).forUpdate().executeTakeFirst()
}

/**
 * Of these calls, those whose row another transaction holds locked right now: what an ingest batch
 * that timed out waiting for a lock asks before it answers. Takes the same lock as the batch's
 * upsert (FOR UPDATE), skipping rows it cannot get, and lets go at once (its own statement).
 */
export async function callsLockedElsewhere(db: Executor, callIds: readonly string[]): Promise<Set<string>> {
  const { rows } = await sql<{ call_id: string }>`
    with free as (select call_id from calls where call_id = any(${callIds}::text[]) for update skip locked)
    select call_id from calls where call_id = any(${callIds}::text[]) and call_id not in (select call_id from free)`.execute(db)
  return new Set(rows.map((r) => r.call_id))
}

/** A row for json_populate_recordset: the table's column names, jsonb columns as objects rather than text. */
type JsonRow<T extends keyof Database> = { [K in keyof Database[T] & string]?: unknown }

/**
 * `insert into table (columns) select columns from json_populate_recordset(...) v`: any number of
 * rows, one parameter. `join`: a join on `v`, and the columns it supplies instead of the rows.
 */
function insertRows<T extends keyof Database>(
  table: T,
  columns: readonly (keyof Database[T] & string)[],
  rows: readonly JsonRow<T>[],
  where = sql``,
  join?: { from: RawBuilder<unknown>; select: Partial<Record<keyof Database[T] & string, RawBuilder<unknown>>> },
) {
  const t = fixed(`table ${table}`, () => sql.table(table))
  const cols = fixed(`columns ${columns.join()}`, () => sql.join(columns.map((c) => sql.id(c))))
  const values = join ? sql.join(columns.map((c) => join.select[c] ?? sql`v.${sql.id(c)}`)) : cols
  return sql`insert into ${t} (${cols}) select ${values} from json_populate_recordset(null::${t}, ${JSON.stringify(rows)}::json) v ${join?.from ?? sql``} ${where}`
}

/**
 * `update table set columns from json_populate_recordset(...) where key matches`: each row updates
 * its own target. The keys are also given as an array: the planner cannot see how few rows the
 * JSON holds (it guesses 100) and would scan a large table instead of using its primary key.
 */
function updateRows<T extends keyof Database>(
  table: T,
  key: keyof Database[T] & string,
  columns: readonly (keyof Database[T] & string)[],
  rows: readonly JsonRow<T>[],
  extra: { set?: RawBuilder<unknown>; from?: RawBuilder<unknown>; where?: RawBuilder<unknown> } = {},
) {
  const t = fixed(`table ${table}`, () => sql.table(table))
  const fromRows = fixed(`set ${columns.join()}`, () => sql.join(columns.map((c) => sql`${sql.id(c)} = v.${sql.id(c)}`)))
  const set = extra.set ? sql.join([fromRows, extra.set]) : fromRows
  const k = fixed(`column ${key}`, () => sql.id(key))
  const keys = rows.map((r) => r[key])
  return sql`update ${t} t set ${set} from json_populate_recordset(null::${t}, ${JSON.stringify(rows)}::json) v ${extra.from ? sql`, ${extra.from}` : sql``}
    where t.${k} = any(${keys}) and t.${k} = v.${k} ${extra.where ? sql`and ${extra.where}` : sql``}`
}

const TRANSITION_COLUMNS = ['assignment_id', 'from_status', 'to_status', 'role', 'actor', 'reason', 'feed_agency', 'feed_queue'] as const

export interface BatchWrite {
  events: JsonRow<'call_events'>[]
  decisions: JsonRow<'decisions'>[]
  assignments: JsonRow<'assignments'>[]
  /** Existing assignments whose role changes (id, role, updated_at): only the role is written. */
  roleChanges: JsonRow<'assignments'>[]
  /** The role changes' transitions: their status is the assignment's as the statement finds it (written there). */
  roleChangeTransitions: JsonRow<'assignment_transitions'>[]
  /** Existing assignments a close cancels (id, updated_at): cancelled only if still open when written. */
  cancellations: JsonRow<'assignments'>[]
  outbox: JsonRow<'outbox'>[]
  transitions: JsonRow<'assignment_transitions'>[]
  /** The cancellations' transitions: written for the assignments the statement did cancel. */
  cancellationTransitions: JsonRow<'assignment_transitions'>[]
  shadow: JsonRow<'shadow_decisions'>[]
  calls: JsonRow<'calls'>[]
  /** Calls closed by a close dated before their last applied event: only CLOSE_COLUMNS are written. */
  closes: JsonRow<'calls'>[]
}

/** The columns a decision sets on its call (everything but the key and the creation time). */
const CALL_COLUMNS = [
  'agency', 'status', 'nature_code', 'priority', 'flags', 'location', 'caller', 'subject', 'description', 'subject_person_id', 'address_key',
  'dispatcher_override', 'disposition', 'mental_health', 'route', 'decision_id', 'last_occurred_at', 'updated_at', 'closed_at',
] as const

/** What a close dated before the call's last applied event sets: the rest of the call is the newer event's. */
const CLOSE_COLUMNS = ['status', 'disposition', 'mental_health', 'route', 'decision_id', 'updated_at', 'closed_at'] as const

/**
 * Writes everything a batch of events produced in a single statement (data-modifying CTEs): the
 * events, decisions, new assignments with their outbox rows and transitions, changed assignments,
 * shadow decisions and the calls' new state. Foreign keys are checked at the end of the statement,
 * so the order inside is free. Returns how many events were stored: fewer than given means another
 * transaction stored one of the same ids first, and the caller must roll back.
 * The relay is woken by the outbox insert trigger (migration 0011) when the transaction commits.
 */
export async function writeBatch(trx: Transaction<Database>, w: BatchWrite): Promise<number> {
  const parts = [
    sql`e as (${insertRows('call_events', ['event_id', 'call_id', 'type', 'occurred_at', 'body_hash', 'body', 'applied', 'decision_id'], w.events)}
      on conflict (event_id) do nothing returning event_id)`,
  ]
  const add = (name: string, statement: ReturnType<typeof sql>, rows: readonly unknown[]) => {
    if (rows.length) parts.push(sql`${sql.id(name)} as (${statement})`)
  }
  add('d', insertRows('decisions', ['id', 'call_id', 'event_id', 'route', 'rule_set_version', 'rule_id', 'explanation', 'facts', 'outcome', 'created_at'], w.decisions), w.decisions)
  add('a', insertRows('assignments', ['id', 'call_id', 'decision_id', 'agency', 'queue', 'role', 'status', 'due_at', 'reserved_until', 'case_manager'], w.assignments), w.assignments)
  if (w.roleChanges.length) {
    // A console or a worker may have moved the assignment since ingest read it: the transition says
    // the status the row has now (the update waited for its lock), not the one read, or a console
    // applying the event's status would put an acknowledged assignment back to queued.
    parts.push(sql`r as (${updateRows('assignments', 'id', ['role', 'updated_at'], w.roleChanges)} returning t.id, t.status)`)
    parts.push(sql`rt as (${insertRows('assignment_transitions', TRANSITION_COLUMNS, w.roleChangeTransitions, sql``, {
      from: sql`join r on r.id = v.assignment_id`,
      select: { from_status: sql`r.status`, to_status: sql`r.status` },
    })})`)
  }
  // An assignment completed (or otherwise closed) since it was read stays as it is, without a transition.
  // The others are locked first and their status read then: a worker's offer or a console's move may
  // have committed since ingest read them, and the transition says what was cancelled (an UPDATE's
  // RETURNING gives only the new status, and a plain join would give the status read at the start).
  if (w.cancellations.length) {
    const ids = w.cancellations.map((c) => c.id)
    parts.push(sql`xl as materialized (select id, status from assignments where id = any(${ids}) for update)`)
    parts.push(sql`x as (${updateRows('assignments', 'id', ['updated_at'], w.cancellations, {
      set: sql`status = 'cancelled'`,
      from: sql`xl`,
      where: sql`xl.id = t.id and xl.status = any(${OPEN_STATUSES as readonly string[]})`,
    })} returning t.id, xl.status as from_status)`)
    parts.push(sql`xt as (${insertRows('assignment_transitions', TRANSITION_COLUMNS, w.cancellationTransitions, sql``, {
      from: sql`join x on x.id = v.assignment_id`,
      select: { from_status: sql`x.from_status` },
    })})`)
  }
  add('o', insertRows('outbox', ['assignment_id', 'queue', 'job_id', 'payload', 'trace_context'], w.outbox), w.outbox)
  add('t', insertRows('assignment_transitions', TRANSITION_COLUMNS, w.transitions), w.transitions)
  add(
    's',
    insertRows(
      'shadow_decisions',
      ['decision_id', 'call_id', 'agency', 'event_type', 'live_version', 'shadow_version', 'nature_code', 'live_route', 'shadow_route', 'live_rule_id', 'shadow_rule_id', 'changed', 'mental_health', 'shadow_assignments'],
      w.shadow,
    ),
    w.shadow,
  )
  add('c', updateRows('calls', 'call_id', CALL_COLUMNS, w.calls), w.calls)
  // A batch never holds two events of one call (group-commit keys), so no row is in both updates.
  add('cc', updateRows('calls', 'call_id', CLOSE_COLUMNS, w.closes), w.closes)
  // Prepared: its text takes a few shapes (which parts a batch has), each planned once per connection.
  const { rows } = await prepared(sql<{ n: number }>`with ${sql.join(parts)} select count(*)::int as n from e`).execute(trx)
  return rows[0]!.n
}

interface StoredOutcome {
  assignmentIds: string[]
  /**
   * The route the rule set gives these facts; the decision's own route differs when the call kept
   * other responders (an update) or its route (a close), as the notes say. Absent in decisions
   * stored before it was recorded, where the two differ only on a close.
   */
  ruleRoute?: RoutingDecision['route']
  fallback: RoutingDecision['fallback']
  override: RoutingDecision['override']
  review: string[]
  followUp: RoutingDecision['followUp']
  trace: RoutingDecision['trace']
  derived: RoutingDecision['derived']
  notes: string[]
}

export function toStoredOutcome(decision: RoutingDecision, assignmentIds: string[], notes: string[]): StoredOutcome {
  return {
    assignmentIds,
    ruleRoute: decision.route,
    fallback: decision.fallback,
    override: decision.override,
    review: decision.review,
    followUp: decision.followUp,
    trace: decision.trace,
    derived: decision.derived,
    notes,
  }
}

/** A stored decision as the API shows it, with its assignments' current status. */
export async function loadDecisionView(db: Executor, decisionId: string): Promise<DecisionView & { eventId: string; facts: unknown; trace: RoutingDecision['trace'] }> {
  const row = await db.selectFrom('decisions').selectAll().where('id', '=', decisionId).executeTakeFirstOrThrow()
  const outcome = row.outcome as StoredOutcome
  const ids = outcome.assignmentIds
  const rows = ids.length
    ? await db.selectFrom('assignments').select(['id', 'queue', 'role', 'status']).where('id', 'in', ids).execute()
    : []
  const byId = new Map(rows.map((r) => [r.id, r]))
  // Role and status are live: later moves are in the assignment's transitions.
  const assignments = ids.flatMap((id) => {
    const a = byId.get(id)
    return a ? [{ id: a.id, queue: a.queue, role: a.role, status: a.status } as AssignmentSummary] : []
  })
  return {
    id: row.id,
    eventId: row.event_id,
    route: row.route as DecisionView['route'],
    assignments,
    ruleSetVersion: row.rule_set_version,
    ruleId: row.rule_id,
    explanation: row.explanation,
    fallback: outcome.fallback,
    override: outcome.override,
    review: outcome.review,
    followUp: outcome.followUp,
    decidedAt: row.created_at.toISOString(),
    facts: row.facts,
    trace: outcome.trace,
  }
}

/**
 * A stored or posted event document with its false flags left out of call.flags. Every flag
 * defaults to false, so a flag a later release adds reads false in a retry of an event an earlier
 * release stored, whose stored body lacks it: compared whole, a CAD's retry across that deploy was
 * refused as a different body (409) although nothing the CAD sent had changed. Flags in another
 * shape than an object are left as they are (compared as they are: a 409, not an error).
 */
const withoutFalseFlags = (doc: RawBuilder<unknown>) => sql`
  case when coalesce(jsonb_typeof(${doc}->'call'->'flags'), 'object') = 'object'
    then jsonb_set(${doc}, '{call,flags}', coalesce((select jsonb_object_agg(f.key, f.value) from jsonb_each(${doc}->'call'->'flags') f where f.value <> 'false'::jsonb), '{}'::jsonb))
    else ${doc} end`

/**
 * Whether a repeat whose body hash differs is still the stored event: its occurredAt written another
 * way (an offset for Z, `.000` added) names the same instant, or the stored body lacks a flag this
 * release knows and the repeat has false (both documents compared through withoutFalseFlags). The
 * hash is of the event as parsed, and must never change for the hashes stored to keep matching, so
 * these are compared here, on the rare mismatch, and not in it.
 */
export async function sameAsStoredEvent(db: Executor, event: CallEvent): Promise<boolean> {
  const { rows } = await sql<{ same: boolean }>`
    with posted as (select ${JSON.stringify(event)}::jsonb as body)
    select ${withoutFalseFlags(sql`e.body`)} - 'occurredAt' = ${withoutFalseFlags(sql`p.body`)} - 'occurredAt'
       and e.occurred_at = ${event.occurredAt}::timestamptz as same
      from call_events e, posted p where e.event_id = ${event.eventId}`.execute(db)
  return rows[0]?.same === true
}
