import { randomUUID } from 'node:crypto'
import { sql, type Insertable, type Selectable, type Transaction } from 'kysely'
import type { Db } from '../db/connect.js'
import type { AssignmentTransitionsTable, AssignmentsTable, Database } from '../db/schema.js'
import { caseManagerFor } from '../calls/history.js'
import { lockCall, lockCruTeams, readCallContexts } from '../calls/repository.js'
import { AppError, notFound } from '../http/errors.js'
import { assignmentJob, jobIdFor } from '../queue/queues.js'
import { DEFAULT_ESCALATION } from '../routing/rule-set.js'
import { activeVersion, loadDocument } from '../rule-sets/repository.js'
import {
  cruAvailability,
  cruCapacity,
  cruTeamKey,
  ROUTE_PRIMARY,
  SAFETY_FLAGS,
  SAFETY_NATURE_CODES,
  type AssignmentSpec,
  type QueueName,
  type Role,
  type Route,
  type RuleSet,
} from '../routing/index.js'
import { lockCallOfAssignment, toAssignmentView, typedSpan } from './repository.js'
import type { AssignmentView } from './schemas.js'
import { MOVES, canMove, cruHolding, isOpen, type AssignmentStatus } from './state-machine.js'

/**
 * Escalation: an assignment declined by its responder, or not acknowledged by its deadline, is
 * handed along the rule set's fallback (`escalation`: queue → route, CRU → co-response → police):
 *
 * - a primary whose queue has a fallback route: the call gets that route's assignments it does not
 *   already have open (a CRU support already there becomes primary, say); the failed one is
 *   `escalated` (deadline) or stays `declined`;
 * - a support whose queue has a fallback: nothing new — the call's primary carries the call (the
 *   last step, co-response → police);
 * - a queue without a fallback (police, EMS, and follow-up always: its call is closed): the same
 *   queue and role are offered again as a new assignment; the failed one is `expired` (deadline) or
 *   stays `declined`. A follow-up offered again keeps the time it must be done by, and its
 *   reservation while that is still ahead.
 *
 * DESIGN rule 1 binds every step: on a call with safety facts (weapons, violence, a threat to
 * others, a crime in progress — which a dispatcher may have routed elsewhere, rule 10) the chain
 * skips routes without police as primary (case manager → CRU → co-response), and whatever is left
 * open afterwards has police as primary: police are added, or promoted, and the others stand beside.
 *
 * New assignments (an offer again in the same queue included) are for the agency the call has now,
 * as ingest's are: after CAD hands a call to another agency, the assignments it had stay with the
 * agency that took them, and what escalation adds goes to the new one; an open assignment of the
 * old agency is still the call's, and changes role rather than being doubled, as at ingest. They go
 * through the outbox in the same transaction (the same guarantee as a routing decision), carry
 * `escalated_from`, and every move is recorded in assignment_transitions with who, when and why.
 * Runs the same in the API (a decline), the lifecycle worker (a deadline job) and the
 * sweep; it is idempotent: an assignment that has moved on is answered unchanged.
 */

/** How a decline's reason begins when the responder gave one; the words after it are theirs. */
const DECLINED_PREFIX = 'declined: '

export type EscalationCause =
  | { kind: 'deadline'; actor: string }
  | { kind: 'decline'; actor: string; reason?: string | undefined }

export interface EscalationResult {
  /** The failed assignment after the move (or as found, when nothing changed). */
  view: AssignmentView
  changed: boolean
  /** Why nothing changed: the assignment was acknowledged meanwhile, or its deadline is still ahead. */
  skipped?: 'moved-on' | 'not-due'
  created: AssignmentView[]
  /** The route the call was escalated to; null when offered again in the same queue or dropped. */
  route: Route | null
}

export interface EscalationOptions {
  now?: Date
  /** The caller's scope (console decline): an assignment it may not see is answered as unknown. */
  visible?: (a: { agency: string; queue: string }) => boolean
  /** Runs in the escalation's transaction (the audit record). */
  onMoved?: (trx: Transaction<Database>, view: AssignmentView, created: AssignmentView[]) => Promise<void>
}

interface Fallback {
  escalation: Partial<Record<QueueName, Route>>
  routes: Record<Route, AssignmentSpec[]>
  /** The whole document: CRU availability falls back on it when no version is active. */
  document: RuleSet
  /** The history facts the decision saw: whom a case-management assignment it makes is for. */
  history: { caseManager?: unknown } | null
}

// Rule-set versions are immutable, so their documents are kept for the process's life.
const documentCache = new Map<number, RuleSet>()

async function documentOf(trx: Transaction<Database>, version: number): Promise<RuleSet | undefined> {
  const hit = documentCache.get(version)
  if (hit) return hit
  const document = (await loadDocument(trx, version)) as RuleSet | undefined
  if (document) documentCache.set(version, document)
  return document
}

async function fallbackOf(trx: Transaction<Database>, decisionId: string): Promise<Fallback> {
  const { version, history } = await trx
    .selectFrom('decisions')
    .select(['rule_set_version as version', sql<{ caseManager?: unknown } | null>`facts->'history'`.as('history')])
    .where('id', '=', decisionId)
    .executeTakeFirstOrThrow()
  const document = await documentOf(trx, version)
  if (!document) throw new Error(`rule set ${version} of decision ${decisionId} is not stored`) // a foreign key rules it out
  // Stored documents were validated when stored; a document without `escalation` predates it.
  return { escalation: document.escalation ?? DEFAULT_ESCALATION, routes: document.routes, document, history }
}

/**
 * CRU availability is today's, as ingest sees it: the active rule set's schedules and limits, not
 * those of the version that made the call's first decision (the fallback routes are that version's).
 */
async function activeDocument(trx: Transaction<Database>, fallback: RuleSet): Promise<RuleSet> {
  const version = await activeVersion(trx)
  if (version === undefined) return fallback
  return (await documentOf(trx, version)) ?? fallback
}

/**
 * The call's DESIGN rule 1 facts, as its latest decision saw them (the call as CAD last described it),
 * in words for the record; null when there are none. The same definition the rule-set verifier
 * proves every rule set against (SAFETY_FLAGS, SAFETY_NATURE_CODES on the mapped nature code), and
 * — since a rule set may name more, as the default's `safety` does — a principle-1 rule that fired,
 * or would have fired had a dispatcher not overridden it.
 */
async function safetyFacts(trx: Transaction<Database>, callId: string): Promise<string | null> {
  const row = await trx
    .selectFrom('calls')
    .innerJoin('decisions', 'decisions.id', 'calls.decision_id')
    .select([
      'decisions.rule_set_version as version',
      'decisions.rule_id as ruleId',
      sql<Record<string, boolean> | null>`decisions.facts->'flags'`.as('flags'),
      sql<string | null>`coalesce(decisions.outcome->'derived'->>'natureCode', decisions.facts->>'natureCode')`.as('natureCode'),
      sql<string | null>`decisions.outcome->'override'->>'overriddenRuleId'`.as('overriddenRuleId'),
    ])
    .where('calls.call_id', '=', callId)
    .executeTakeFirst()
  if (!row) return null
  const facts: string[] = SAFETY_FLAGS.filter((f) => row.flags?.[f] === true)
  if (row.natureCode && SAFETY_NATURE_CODES.has(row.natureCode)) facts.push(`nature code ${row.natureCode}`)
  if (facts.length) return `the call has ${facts.join(', ')}`
  const ruleId = row.overriddenRuleId ?? row.ruleId
  const rule = (await documentOf(trx, row.version))?.rules.find((r) => r.id === ruleId)
  return rule?.principle === 1 ? `its rule ${rule.id} is a principle-1 rule` : null
}

/**
 * The first route along the rule set's chain, from `route` on, that has police as primary; police
 * itself when the chain ends (or turns back) before one.
 */
function policeLed(escalation: Partial<Record<QueueName, Route>>, route: Route): Route {
  const seen = new Set<Route>()
  let r: Route | undefined = route
  while (r && !seen.has(r)) {
    if (ROUTE_PRIMARY[r] === 'police') return r
    seen.add(r)
    r = escalation[ROUTE_PRIMARY[r]]
  }
  return 'police'
}

export async function escalateAssignment(db: Db, id: string, cause: EscalationCause, opts: EscalationOptions = {}): Promise<EscalationResult> {
  const first = await db.selectFrom('assignments').selectAll().where('id', '=', id).executeTakeFirst()
  if (!first || (opts.visible && !opts.visible(first))) throw notFound(`assignment ${id}`)
  // Every offer's deadline job comes due, and nearly all find the offer acknowledged. Statuses only
  // move forward, so one read without locks settles those (and deadlines not due yet) without
  // taking the call's lock that ingest waits on.
  if (cause.kind === 'deadline') {
    const now = opts.now ?? new Date()
    const skipped = !canMove('escalate', first.status as AssignmentStatus) ? 'moved-on' : !first.ack_deadline_at || first.ack_deadline_at.getTime() > now.getTime() ? 'not-due' : undefined
    if (skipped) return { view: toAssignmentView(first, now), changed: false, skipped, created: [], route: null }
  }
  return db.transaction().execute(async (trx) => {
    // The call first, then its assignments: the same order as ingest, so the two never deadlock.
    const call = await lockCall(trx, first.call_id)
    if (!call) throw new Error(`call ${first.call_id} of assignment ${id} is not stored`) // a foreign key rules it out
    // Not the failed assignment's: after a hand-over, what this step adds (and the CRU team whose
    // hours and places it needs) is the new agency's, as at ingest.
    const agency = call.agency
    const a = await trx.selectFrom('assignments').selectAll().where('id', '=', id).forUpdate().executeTakeFirstOrThrow()
    const now = opts.now ?? new Date()
    const status = a.status as AssignmentStatus
    const unchanged = (skipped: EscalationResult['skipped']): EscalationResult => ({ view: toAssignmentView(a, now), changed: false, skipped, created: [], route: null })

    let why: string
    if (cause.kind === 'deadline') {
      if (!canMove('escalate', status)) return unchanged('moved-on')
      if (!a.ack_deadline_at || a.ack_deadline_at.getTime() > now.getTime()) return unchanged('not-due')
      why = `not acknowledged by ${a.ack_deadline_at.toISOString()}`
    } else {
      if (!canMove('decline', status)) {
        throw new AppError('illegal-transition', `cannot decline an assignment that is ${status}`, { extra: { currentStatus: status, allowedFrom: MOVES.decline.from } })
      }
      why = cause.reason ? `${DECLINED_PREFIX}${cause.reason}` : 'declined'
    }
    const typed = typedSpan(cause.kind === 'decline' ? cause.reason : undefined, DECLINED_PREFIX.length + 1)
    // What the responder typed stays on their own assignment: the police or EMS assignments this
    // creates or changes are read by criminal-justice consoles, and a CRU desk's reason is health data.
    const whyElsewhere = cause.kind === 'decline' ? 'declined' : why

    const queue = a.queue as QueueName
    const role = a.role as Role
    const fb = await fallbackOf(trx, a.decision_id)
    // A follow-up comes after the call has closed: nobody is sent to the scene any more.
    const safety = queue === 'follow_up' ? null : await safetyFacts(trx, a.call_id)
    const rule1 = `DESIGN rule 1: ${safety}`
    // Nor does a follow-up have a fallback route, whatever a rule set stored before verification
    // refused one names for follow_up: its responders would go to a call that is over, and no close
    // would ever cancel them. Nor EMS (DESIGN rule 2): one would drop or replace EMS on a medical call.
    let target = queue === 'follow_up' || queue === 'ems' ? null : (fb.escalation[queue] ?? null)
    let safetyNote = ''
    if (target && role === 'primary' && safety && ROUTE_PRIMARY[target] !== 'police') {
      const skipped = target
      target = policeLed(fb.escalation, target)
      safetyNote = ` (not ${skipped}, which has no police as primary — ${rule1})`
    }
    // The call's other open assignments, locked: what the step changes, and whether CRU holds the call.
    const others = (await trx.selectFrom('assignments').selectAll().where('call_id', '=', a.call_id).where('id', '<>', a.id).forUpdate().execute()).filter(
      (o) => isOpen(o.status) && o.queue !== 'follow_up',
    )
    // DESIGN rule 7 holds for escalations too: a route that needs CRU, when CRU is off hours or at
    // capacity, goes to police instead (counted as ingest counts, under the team's lock).
    let cruNote = ''
    if (target && target !== 'police' && role === 'primary' && fb.routes[target].some((s) => s.queue === 'cru')) {
      const today = await activeDocument(trx, fb.document)
      const capacity = cruCapacity(today, agency)
      if (capacity) await lockCruTeams(trx, [cruTeamKey(capacity)])
      const [context] = capacity
        ? await readCallContexts(trx, [{ callId: a.call_id, personId: null, addressKey: null, since: new Date(0), exclude: [], capacity, assignments: false }])
        : []
      // A call CRU already holds (an open CRU assignment besides the failed one) stays available to
      // it, as at ingest (src/rule-sets/facts.ts): hours and capacity are about taking on a new call.
      const holds = others.some((o) => cruHolding(o.queue, o.status))
      const cru = cruAvailability(today, agency, now, context?.openCru)
      if (!cru.available && !holds) {
        cruNote = ` (${target} needs CRU, which is not available: ${cru.reason})`
        target = 'police'
      }
    }

    const fresh: { queue: QueueName; role: Role; note?: string }[] = []
    const roleChanges: { row: Selectable<AssignmentsTable>; to: Role }[] = []
    let outcome: string
    let to: AssignmentStatus
    if (target && role === 'primary') {
      for (const spec of fb.routes[target]) {
        const have = others.find((o) => o.queue === spec.queue)
        if (!have) fresh.push({ queue: spec.queue, role: spec.role })
        else if (have.role !== spec.role) roleChanges.push({ row: have, to: spec.role })
      }
      to = 'escalated'
      outcome = `escalated to ${target}${safetyNote}${cruNote}`
    } else if (target) {
      to = 'escalated'
      outcome = `${queue} support dropped: the primary carries the call`
    } else {
      fresh.push({ queue, role })
      to = 'expired'
      outcome = `offered again to ${queue} (no fallback beyond ${queue})`
    }
    if (cause.kind === 'decline') to = 'declined'
    if (safety) {
      // Whatever the step (a support dropped, a responder offered again, a rule set's chain), a call
      // with safety facts is never left without police as primary: no automated step sends it to
      // CRU or a case manager alone.
      const roleOf = (o: Selectable<AssignmentsTable>): Role => roleChanges.find((c) => c.row.id === o.id)?.to ?? (o.role as Role)
      const setRole = (o: Selectable<AssignmentsTable>, r: Role) => {
        const i = roleChanges.findIndex((c) => c.row.id === o.id)
        if (i >= 0) roleChanges.splice(i, 1)
        if (o.role !== r) roleChanges.push({ row: o, to: r })
      }
      const policeLeads = fresh.some((f) => f.queue === 'police' && f.role === 'primary') || others.some((o) => o.queue === 'police' && roleOf(o) === 'primary')
      if (!policeLeads) {
        for (const f of fresh) if (f.queue !== 'police') f.role = 'support'
        for (const o of others) if (o.queue !== 'police' && roleOf(o) === 'primary') setRole(o, 'support')
        const police = fresh.find((f) => f.queue === 'police')
        const openPolice = others.find((o) => o.queue === 'police')
        if (police) police.role = 'primary'
        else if (openPolice) setRole(openPolice, 'primary')
        else fresh.unshift({ queue: 'police', role: 'primary', note: `police added as primary (${rule1})` })
        // A support dropped leaves a primary that may not carry such a call alone.
        if (target && role === 'support') outcome = `${queue} support dropped`
        outcome += `; police added as primary (${rule1})`
      }
    }
    if (fresh.length) outcome += `; new: ${fresh.map((f) => `${f.queue} ${f.role}`).join(', ')}`
    if (roleChanges.length) outcome += `; ${roleChanges.map((c) => `${c.row.queue} becomes ${c.to}`).join(', ')}`

    const updated = await trx.updateTable('assignments').set({ status: to, updated_at: now }).where('id', '=', a.id).returningAll().executeTakeFirstOrThrow()
    const transitions: Insertable<AssignmentTransitionsTable>[] = [
      { assignment_id: a.id, from_status: status, to_status: to, role: a.role, actor: cause.actor, reason: `${why}; ${outcome}`, ...typed },
    ]
    for (const c of roleChanges) {
      await trx.updateTable('assignments').set({ role: c.to, updated_at: now }).where('id', '=', c.row.id).execute()
      const because = safety && (c.to === 'support' || c.row.queue === 'police') ? ` (${rule1})` : ''
      transitions.push({ assignment_id: c.row.id, from_status: c.row.status, to_status: c.row.status, role: c.to, actor: cause.actor, reason: `role ${c.row.role} → ${c.to}: ${a.queue} ${whyElsewhere}${because}` })
    }

    const created: AssignmentView[] = []
    if (fresh.length) {
      // A follow-up offered again keeps the time it must be done by, and waits, reserved, for the
      // time it was to be offered when that is still ahead (the worker holds its job until then).
      const reservedUntil = a.reserved_until && a.reserved_until.getTime() > now.getTime() ? a.reserved_until : null
      const notes = new Map<string, string | undefined>()
      const rows = await trx
        .insertInto('assignments')
        .values(
          fresh.map((f) => {
            const same = f.queue === a.queue
            const id = randomUUID()
            notes.set(id, f.note)
            return {
              id,
              call_id: a.call_id,
              // The decision that made the call's first assignments; the lineage is escalated_from.
              decision_id: a.decision_id,
              agency,
              queue: f.queue,
              role: f.role,
              status: same && reservedUntil ? 'reserved' : 'queued',
              due_at: same ? a.due_at : null,
              reserved_until: same ? reservedUntil : null,
              escalated_from: a.id,
              // A case-management assignment (offered again, or a fallback route's) is for the case
              // manager of the decision it descends from, as the one it replaces: not the link as it is now.
              case_manager: caseManagerFor(f.queue, fb.history),
              created_at: now,
              updated_at: now,
            }
          }),
        )
        .returningAll()
        .execute()
      await trx
        .insertInto('outbox')
        .values(
          rows.map((r) => {
            const job = assignmentJob({ id: r.id, callId: r.call_id, agency: r.agency, queue: r.queue as QueueName, role: r.role as Role, caseManager: r.case_manager })
            return { assignment_id: r.id, queue: r.queue, job_id: jobIdFor(r.id), payload: JSON.stringify(job) }
          }),
        )
        .execute()
      for (const r of rows) {
        const reserved = r.status === 'reserved' && r.reserved_until ? `; reserved until ${r.reserved_until.toISOString()}` : ''
        const note = notes.get(r.id)
        transitions.push({ assignment_id: r.id, from_status: null, to_status: r.status, role: r.role, actor: cause.actor, reason: `escalated from ${a.queue} assignment ${a.id} (${whyElsewhere})${reserved}${note ? `; ${note}` : ''}` })
        created.push(toAssignmentView(r, now))
      }
    }
    await trx.insertInto('assignment_transitions').values(transitions).execute()
    const view = toAssignmentView(updated, now)
    await opts.onMoved?.(trx, view, created)
    return { view, changed: true, created, route: target && role === 'primary' ? target : null }
  })
}

export const OVERDUE_ACTOR = 'system:follow-up-deadline'

/**
 * Records, once, that an assignment is still open past the time it must be done by (a follow-up's
 * dueAt): a transition that keeps the status, so the console feed carries the overdue flag too.
 * Answers 'not-due' when the time has not come, false when there is nothing to record.
 */
export async function markOverdue(db: Db, id: string, now: Date = new Date()): Promise<boolean | 'not-due'> {
  return db.transaction().execute(async (trx) => {
    await lockCallOfAssignment(trx, id) // the call first, as every writer of transitions (repository.ts, callFirst)
    const a = await trx.selectFrom('assignments').selectAll().where('id', '=', id).forUpdate().executeTakeFirst()
    if (!a || !a.due_at || !isOpen(a.status)) return false
    if (a.due_at.getTime() > now.getTime()) return 'not-due'
    const already = await trx.selectFrom('assignment_transitions').select('id').where('assignment_id', '=', id).where('actor', '=', OVERDUE_ACTOR).executeTakeFirst()
    if (already) return false
    await trx.updateTable('assignments').set({ updated_at: now }).where('id', '=', id).execute()
    await trx
      .insertInto('assignment_transitions')
      .values({ assignment_id: id, from_status: a.status, to_status: a.status, role: a.role, actor: OVERDUE_ACTOR, reason: `overdue: not done by ${a.due_at.toISOString()}` })
      .execute()
    return true
  })
}
