import { randomUUID } from 'node:crypto'
import type { Selectable, Transaction } from 'kysely'
import type { Db } from '../db/connect.js'
import type { AssignmentsTable, Database } from '../db/schema.js'
import { lockCall, lockCruTeams, readCallContexts } from '../calls/repository.js'
import { AppError, notFound } from '../http/errors.js'
import { jobIdFor, type AssignmentJob } from '../queue/queues.js'
import { DEFAULT_ESCALATION } from '../routing/rule-set.js'
import { activeVersion, loadDocument } from '../rule-sets/repository.js'
import { cruAvailability, cruCapacity, cruTeamKey, type AssignmentSpec, type QueueName, type Role, type Route, type RuleSet } from '../routing/index.js'
import { toAssignmentView } from './repository.js'
import type { AssignmentView } from './schemas.js'
import { canMove, isOpen, type AssignmentStatus } from './state-machine.js'

/**
 * Escalation: an assignment declined by its responder, or not acknowledged by its deadline, is
 * handed along the rule set's fallback (`escalation`: queue → route, CRU → co-response → police):
 *
 * - a primary whose queue has a fallback route: the call gets that route's assignments it does not
 *   already have open (a CRU support already there becomes primary, say); the failed one is
 *   `escalated` (deadline) or stays `declined`;
 * - a support whose queue has a fallback: nothing new — the call's primary carries the call (the
 *   last step, co-response → police);
 * - a queue without a fallback (police, EMS, follow-up): the same queue and role are offered again
 *   as a new assignment; the failed one is `expired` (deadline) or stays `declined`.
 *
 * New assignments go through the outbox in the same transaction (the same guarantee as a routing
 * decision), carry `escalated_from`, and every move is recorded in assignment_transitions with who,
 * when and why. Runs the same in the API (a decline), the lifecycle worker (a deadline job) and the
 * sweep; it is idempotent: an assignment that has moved on is answered unchanged.
 */

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
}

// Rule-set versions are immutable, so their fallback can be cached for the process's life.
const fallbackCache = new Map<number, Fallback>()

async function fallbackOf(trx: Transaction<Database>, decisionId: string): Promise<Fallback> {
  const row = await trx
    .selectFrom('decisions')
    .innerJoin('rule_sets', 'rule_sets.version', 'decisions.rule_set_version')
    .select(['rule_sets.version', 'rule_sets.document'])
    .where('decisions.id', '=', decisionId)
    .executeTakeFirstOrThrow()
  const hit = fallbackCache.get(row.version)
  if (hit) return hit
  // Stored documents were validated when stored; a document without `escalation` predates it.
  const doc = row.document as { escalation?: Partial<Record<QueueName, Route>>; routes: Record<Route, AssignmentSpec[]> }
  const fallback = { escalation: doc.escalation ?? DEFAULT_ESCALATION, routes: doc.routes, document: row.document as RuleSet }
  fallbackCache.set(row.version, fallback)
  return fallback
}

const activeCache = new Map<number, RuleSet>()

/**
 * CRU availability is today's, as ingest sees it: the active rule set's schedules and limits, not
 * those of the version that made the call's first decision (the fallback routes are that version's).
 */
async function activeDocument(trx: Transaction<Database>, fallback: RuleSet): Promise<RuleSet> {
  const version = await activeVersion(trx)
  if (version === undefined) return fallback
  const hit = activeCache.get(version)
  if (hit) return hit
  const document = ((await loadDocument(trx, version)) as RuleSet | undefined) ?? fallback
  activeCache.set(version, document)
  return document
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
    await lockCall(trx, first.call_id)
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
        throw new AppError('illegal-transition', `cannot decline an assignment that is ${status}`, { extra: { currentStatus: status, allowedFrom: ['reserved', 'queued', 'offered', 'acknowledged'] } })
      }
      why = `declined${cause.reason ? `: ${cause.reason}` : ''}`
    }

    const queue = a.queue as QueueName
    const role = a.role as Role
    const fb = await fallbackOf(trx, a.decision_id)
    let target = fb.escalation[queue] ?? null
    // DESIGN rule 7 holds for escalations too: a route that needs CRU, when CRU is off hours or at
    // capacity, goes to police instead (counted as ingest counts, under the team's lock).
    let cruNote = ''
    if (target && target !== 'police' && role === 'primary' && fb.routes[target].some((s) => s.queue === 'cru')) {
      const today = await activeDocument(trx, fb.document)
      const capacity = cruCapacity(today, a.agency)
      if (capacity) await lockCruTeams(trx, [cruTeamKey(capacity)])
      const [context] = capacity
        ? await readCallContexts(trx, [{ callId: a.call_id, personId: null, addressKey: null, since: new Date(0), exclude: [], capacity, assignments: false }])
        : []
      const cru = cruAvailability(today, a.agency, now, context?.openCru)
      if (!cru.available) {
        cruNote = ` (${target} needs CRU, which is not available: ${cru.reason})`
        target = 'police'
      }
    }
    const others = (await trx.selectFrom('assignments').selectAll().where('call_id', '=', a.call_id).where('id', '<>', a.id).forUpdate().execute()).filter(
      (o) => isOpen(o.status) && o.queue !== 'follow_up',
    )

    const fresh: { queue: QueueName; role: Role }[] = []
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
      outcome = `escalated to ${target}${cruNote}`
    } else if (target) {
      to = 'escalated'
      outcome = `${queue} support dropped: the primary carries the call`
    } else {
      fresh.push({ queue, role })
      to = 'expired'
      outcome = `offered again to ${queue} (no fallback beyond ${queue})`
    }
    if (cause.kind === 'decline') to = 'declined'
    if (fresh.length) outcome += `; new: ${fresh.map((f) => `${f.queue} ${f.role}`).join(', ')}`
    if (roleChanges.length) outcome += `; ${roleChanges.map((c) => `${c.row.queue} becomes ${c.to}`).join(', ')}`

    const updated = await trx.updateTable('assignments').set({ status: to, updated_at: now }).where('id', '=', a.id).returningAll().executeTakeFirstOrThrow()
    const transitions: Array<{ assignment_id: string; from_status: string | null; to_status: string; role: string; actor: string; reason: string }> = [
      { assignment_id: a.id, from_status: status, to_status: to, role: a.role, actor: cause.actor, reason: `${why}; ${outcome}` },
    ]
    for (const c of roleChanges) {
      await trx.updateTable('assignments').set({ role: c.to, updated_at: now }).where('id', '=', c.row.id).execute()
      transitions.push({ assignment_id: c.row.id, from_status: c.row.status, to_status: c.row.status, role: c.to, actor: cause.actor, reason: `role ${c.row.role} → ${c.to}: ${a.queue} ${why}` })
    }

    const created: AssignmentView[] = []
    if (fresh.length) {
      const rows = await trx
        .insertInto('assignments')
        .values(
          fresh.map((f) => ({
            id: randomUUID(),
            call_id: a.call_id,
            // The decision that made the call's first assignments; the lineage is escalated_from.
            decision_id: a.decision_id,
            agency: a.agency,
            queue: f.queue,
            role: f.role,
            status: 'queued',
            // A follow-up offered again keeps the time it must be done by.
            due_at: f.queue === a.queue ? a.due_at : null,
            escalated_from: a.id,
            created_at: now,
            updated_at: now,
          })),
        )
        .returningAll()
        .execute()
      await trx
        .insertInto('outbox')
        .values(
          rows.map((r) => {
            const job: AssignmentJob = { assignmentId: r.id, callId: r.call_id, agency: r.agency, queue: r.queue as QueueName, role: r.role as Role }
            return { assignment_id: r.id, queue: r.queue, job_id: jobIdFor(r.id), payload: JSON.stringify(job) }
          }),
        )
        .execute()
      for (const r of rows) {
        transitions.push({ assignment_id: r.id, from_status: null, to_status: 'queued', role: r.role, actor: cause.actor, reason: `escalated from ${a.queue} assignment ${a.id} (${why})` })
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
