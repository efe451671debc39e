import { sql, type Insertable, type Transaction, type Updateable } from 'kysely'
import type { Executor } from '../db/connect.js'
import type { Database } from '../db/schema.js'
import type { AssignmentSummary } from '../assignments/schemas.js'
import type { AssignmentStatus } from '../assignments/state-machine.js'
import type { CruCapacity, QueueName, Role, RoutingDecision } from '../routing/index.js'
import type { DecisionView } from './schemas.js'

export type { Executor }

// Also named in migrations/0011_outbox_notify.ts, whose trigger sends it.
export const OUTBOX_CHANNEL = 'cad_router_outbox'

export function findEvent(db: Executor, eventId: string) {
  return db.selectFrom('call_events').select(['event_id', 'call_id', 'body_hash', 'decision_id', 'applied']).where('event_id', '=', eventId).executeTakeFirst()
}

/**
 * The history facts of DESIGN rule 6 in one round trip: prior calls for the subject and at the
 * address in the window, and whether the subject has an active case manager.
 */
export async function historyFacts(
  db: Executor,
  q: { personId: string | null; addressKey: string | null; callId: string; since: Date },
): Promise<{ priorSubject: number; priorAddress: number; caseManagerActive: boolean }> {
  if (q.personId === null && q.addressKey === null) return { priorSubject: 0, priorAddress: 0, caseManagerActive: false }
  const prior = (column: 'subject_person_id' | 'address_key', value: string | null) =>
    sql<number>`(select count(*) from calls where ${sql.ref(column)} = ${value} and call_id <> ${q.callId} and created_at >= ${q.since})`
  const { rows } = await sql<{ subject: number; address: number; cm: boolean }>`
    select ${prior('subject_person_id', q.personId)} as subject,
           ${prior('address_key', q.addressKey)} as address,
           exists (select 1 from case_links where person_id = ${q.personId} and active) as cm`.execute(db)
  const row = rows[0]!
  return { priorSubject: Number(row.subject), priorAddress: Number(row.address), caseManagerActive: row.cm }
}

/**
 * Creates the call row if it is new and locks it either way, returning it as it was before this
 * event (the no-op update is what takes the lock and makes RETURNING see an existing row).
 */
export function upsertAndLockCall(trx: Transaction<Database>, row: Insertable<Database['calls']>) {
  return trx
    .insertInto('calls')
    .values(row)
    .onConflict((oc) => oc.column('call_id').doUpdateSet({ call_id: (eb) => eb.ref('excluded.call_id') }))
    .returningAll()
    .executeTakeFirstOrThrow()
}

/**
 * Open CRU assignments that count against a CRU team's capacity (DESIGN rule 7), other than the
 * call's own. The status list matches the partial index assignments_open_cru_idx.
 */
export async function countOpenCruAssignments(db: Executor, capacity: CruCapacity, callId: string): Promise<number> {
  let q = db
    .selectFrom('assignments')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where(sql<boolean>`queue = 'cru' and status in ('queued', 'offered', 'acknowledged', 'accepted')`)
    .where('call_id', '<>', callId)
  if (!capacity.except) q = q.where('agency', 'in', capacity.agencies)
  else if (capacity.agencies.length) q = q.where('agency', 'not in', capacity.agencies)
  const row = await q.executeTakeFirstOrThrow()
  return Number(row.n)
}

/** Locks an existing call row for the rest of the transaction (events of one call run one at a time). */
export function lockCall(trx: Transaction<Database>, callId: string) {
  return trx.selectFrom('calls').selectAll().where('call_id', '=', callId).forUpdate().executeTakeFirst()
}

export function callAssignments(db: Executor, callId: string) {
  return db.selectFrom('assignments').select(['id', 'queue', 'role', 'status']).where('call_id', '=', callId).orderBy('seq').execute() as Promise<
    { id: string; queue: QueueName; role: Role; status: AssignmentStatus }[]
  >
}

/**
 * Writes what one decision produced in a single statement (data-modifying CTEs): the decision, its
 * new assignments, their outbox rows and transitions, the call's new state and the event's link to
 * the decision. Foreign keys are checked at the end of the statement, so the order inside is free.
 * The relay is woken by the outbox insert trigger (migration 0011) when the transaction commits.
 */
export async function writeDecision(
  trx: Transaction<Database>,
  w: {
    decision: Insertable<Database['decisions']>
    assignments: Insertable<Database['assignments']>[]
    outbox: Insertable<Database['outbox']>[]
    transitions: Insertable<Database['assignment_transitions']>[]
    call: Updateable<Database['calls']>
  },
): Promise<void> {
  const parts = [sql`d as (${trx.insertInto('decisions').values(w.decision)})`]
  if (w.assignments.length) parts.push(sql`a as (${trx.insertInto('assignments').values(w.assignments)})`)
  if (w.outbox.length) parts.push(sql`o as (${trx.insertInto('outbox').values(w.outbox)})`)
  if (w.transitions.length) parts.push(sql`t as (${trx.insertInto('assignment_transitions').values(w.transitions)})`)
  parts.push(sql`e as (${trx.updateTable('call_events').set({ decision_id: w.decision.id }).where('event_id', '=', w.decision.event_id)})`)
  const updateCall = trx.updateTable('calls').set(w.call).where('call_id', '=', w.decision.call_id)
  await sql`with ${sql.join(parts)} ${updateCall}`.execute(trx)
}

interface StoredOutcome {
  assignmentIds: string[]
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
