import { sql, type Transaction } from 'kysely'
import type { Executor } from '../db/connect.js'
import type { Database } from '../db/schema.js'
import type { AssignmentSummary } from '../assignments/schemas.js'
import type { AssignmentStatus } from '../assignments/state-machine.js'
import type { CruCapacity, QueueName, Role, RoutingDecision } from '../routing/index.js'
import type { DecisionView } from './schemas.js'

export type { Executor }

export const OUTBOX_CHANNEL = 'cad_router_outbox'

export function findEvent(db: Executor, eventId: string) {
  return db.selectFrom('call_events').select(['event_id', 'call_id', 'body_hash', 'decision_id', 'applied']).where('event_id', '=', eventId).executeTakeFirst()
}

export async function countPriorCalls(db: Executor, column: 'subject_person_id' | 'address_key', value: string | null, callId: string, since: Date): Promise<number> {
  if (value === null) return 0
  const row = await db
    .selectFrom('calls')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where(column, '=', value)
    .where('call_id', '<>', callId)
    .where('created_at', '>=', since)
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

export async function hasActiveCaseManager(db: Executor, personId: string | null): Promise<boolean> {
  if (personId === null) return false
  const row = await db.selectFrom('case_links').select('person_id').where('person_id', '=', personId).where('active', '=', true).executeTakeFirst()
  return row !== undefined
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

export function lockCall(trx: Transaction<Database>, callId: string) {
  return trx.selectFrom('calls').selectAll().where('call_id', '=', callId).forUpdate().executeTakeFirst()
}

export function callAssignments(db: Executor, callId: string) {
  return db.selectFrom('assignments').select(['id', 'queue', 'role', 'status']).where('call_id', '=', callId).orderBy('seq').execute() as Promise<
    { id: string; queue: QueueName; role: Role; status: AssignmentStatus }[]
  >
}

export async function notifyOutbox(trx: Transaction<Database>): Promise<void> {
  await sql`select pg_notify(${OUTBOX_CHANNEL}, '')`.execute(trx)
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
