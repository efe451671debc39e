import { randomUUID } from 'node:crypto'
import type { Transaction } from 'kysely'
import type { Db } from '../db/connect.js'
import type { Database } from '../db/schema.js'
import { AppError } from '../http/errors.js'
import { canonicalJson, sha256 } from '../lib/canonical-json.js'
import { jobIdFor, type AssignmentJob } from '../queue/queues.js'
import type { RoutingDecision } from '../routing/index.js'
import type { RuleSetRegistry } from '../rule-sets/registry.js'
import { activeTraceMetadata } from '../telemetry/tracing.js'
import { recordShadowDecision, type ShadowSource } from '../rule-sets/shadow.js'
import { factsFor, openCruCount } from '../rule-sets/facts.js'
import { lookupHistory } from './history.js'
import { planAssignments } from './plan.js'
import {
  callAssignments,
  findEvent,
  loadDecisionView,
  upsertAndLockCall,
  writeDecision,
  toStoredOutcome,
} from './repository.js'
import type { CallEvent, CallEventResult } from './schemas.js'

export interface CallServiceDeps {
  db: Db
  ruleSets: RuleSetRegistry
  followUpDeadlineHours: number
  /** Hours after closing when a follow-up is offered (reserved until then). */
  followUpDueHours?: number
  /** The clock, injectable so tests can route at a chosen time. */
  now?: () => Date
  /** Shadow mode: a candidate rule-set version that decides every call beside the active one. */
  shadow?: Pick<ShadowSource, 'current'>
}

export interface IngestOutcome {
  /** true: this post stored the event (201); false: a repeat of a stored event (200). */
  created: boolean
  result: CallEventResult
}

class DuplicateEvent extends Error {}

export function createCallService(deps: CallServiceDeps) {
  const clock = deps.now ?? (() => new Date())

  async function replay(eventId: string, bodyHash: string): Promise<IngestOutcome | undefined> {
    const stored = await findEvent(deps.db, eventId)
    if (!stored) return undefined
    if (stored.body_hash !== bodyHash) {
      throw new AppError('event-conflict', `event ${eventId} was already received with a different body`, { extra: { eventId } })
    }
    if (!stored.decision_id) throw new Error(`event ${eventId} has no decision`) // cannot happen: written in one transaction
    const decision = await loadDecisionView(deps.db, stored.decision_id)
    return { created: false, result: { eventId, callId: stored.call_id, applied: stored.applied, decision: stripInternal(decision) } }
  }

  /**
   * `mayTouchAgency`: the caller's agency scope; an event for a call that belongs to an agency
   * outside it is refused (a CAD cannot take over another agency's call by its id).
   */
  async function ingest(event: CallEvent, scope: { mayTouchAgency?: (agency: string) => boolean } = {}): Promise<IngestOutcome> {
    const bodyHash = sha256(canonicalJson(event))
    try {
      // No lookup first: the event's primary key inside the transaction tells a repeat apart, which
      // saves a round trip on every new event and costs one rolled-back transaction on a repeat.
      return await deps.db.transaction().execute((trx) => apply(trx, event, bodyHash, scope.mayTouchAgency))
    } catch (err) {
      if (err instanceof DuplicateEvent) {
        const outcome = await replay(event.eventId, bodyHash)
        if (outcome) return outcome
      }
      throw err
    }
  }

  async function apply(trx: Transaction<Database>, event: CallEvent, bodyHash: string, mayTouchAgency?: (agency: string) => boolean): Promise<IngestOutcome> {
    const now = clock()
    const { call } = event
    const occurredAt = new Date(event.occurredAt)
    const ruleSet = deps.ruleSets.active()

    // Serialise the events of one call: the first writer creates the row, everyone locks it, and the
    // row comes back as it was before this event — one round trip.
    const current = await upsertAndLockCall(trx, {
      call_id: call.callId,
      agency: call.agency,
      status: 'open',
      nature_code: call.natureCode,
      priority: call.priority,
      flags: JSON.stringify(call.flags),
      route: 'police',
      last_occurred_at: occurredAt,
    })
    if (mayTouchAgency && !mayTouchAgency(current.agency)) throw new AppError('forbidden', `this key may not post events for call ${call.callId}`)
    const isNew = current.decision_id === null
    // An event older than one already applied, or a second close, is kept for the record only.
    const stale = !isNew && (occurredAt < current.last_occurred_at || (current.status === 'closed' && event.type === 'call.closed'))

    const inserted = await trx
      .insertInto('call_events')
      .values({
        event_id: event.eventId,
        call_id: call.callId,
        type: event.type,
        occurred_at: occurredAt,
        body_hash: bodyHash,
        body: JSON.stringify(event),
        applied: !stale,
        decision_id: stale ? current.decision_id : null,
      })
      .onConflict((oc) => oc.column('event_id').doNothing())
      .returning('event_id')
      .executeTakeFirst()
    if (!inserted) throw new DuplicateEvent()

    if (stale) {
      const decision = await loadDecisionView(trx, current.decision_id!)
      return { created: true, result: { eventId: event.eventId, callId: call.callId, applied: false, decision: stripInternal(decision) } }
    }
    if (!isNew && current.status === 'closed') {
      throw new AppError('call-closed', `call ${call.callId} was closed at ${current.closed_at?.toISOString()}; a closed call takes no ${event.type}`, {
        extra: { callId: call.callId },
      })
    }

    const { personId, addressKey: addrKey, history } = await lookupHistory(trx, call, now)
    const openCru = await openCruCount(trx, ruleSet, call)
    const facts = factsFor(ruleSet, { eventType: event.type, call, at: now, history, openCru })
    const decision = ruleSet.decide(facts)
    const mentalHealthCall = current.mental_health || decision.derived.mentalHealthIndicator

    const existing = isNew ? [] : await callAssignments(trx, call.callId)
    const plan = planAssignments({
      eventType: event.type,
      decision,
      existing,
      mentalHealthCall,
      now,
      defaultFollowUpHours: deps.followUpDeadlineHours,
      followUpOfferHours: deps.followUpDueHours ?? 0,
    })

    const decisionId = randomUUID()
    const ids = plan.assignments.map((a) => a.id ?? randomUUID())
    const fresh = plan.assignments.map((a, i) => ({ ...a, id: ids[i]! })).filter((_, i) => plan.assignments[i]!.id === undefined)
    const route = event.type === 'call.closed' && !isNew ? (current.route as RoutingDecision['route']) : decision.route
    const explanation = [decision.explanation, ...explainPlan(plan, event.type)].join(' ')

    const transitions = [
      // Agency and queue given: the feed's trigger cannot see assignments created in the same statement.
      ...fresh.map((a) => ({
        assignment_id: a.id,
        from_status: null,
        to_status: a.status,
        role: a.role,
        actor: 'router',
        reason: a.reservedUntil ? `decision ${decision.ruleId}; reserved until ${a.reservedUntil.toISOString()}` : `decision ${decision.ruleId}`,
        feed_agency: call.agency,
        feed_queue: a.queue,
      })),
      ...plan.roleChanges.map((c) => {
        const status = existing.find((e) => e.id === c.id)!.status
        return { assignment_id: c.id, from_status: status, to_status: status, role: c.to, actor: 'router', reason: `role ${c.from} → ${c.to}: ${c.reason}` }
      }),
      ...plan.cancellations.map((c) => ({
        assignment_id: c.id,
        from_status: c.from,
        to_status: 'cancelled',
        role: existing.find((e) => e.id === c.id)!.role,
        actor: 'cad',
        reason: `call closed${call.disposition ? ` (${call.disposition})` : ''}`,
      })),
    ]
    // Changes to assignments that already exist, before the statement below records them.
    for (const c of plan.roleChanges) {
      await trx.updateTable('assignments').set({ role: c.to, updated_at: now }).where('id', '=', c.id).execute()
    }
    if (plan.cancellations.length) {
      await trx
        .updateTable('assignments')
        .set({ status: 'cancelled', updated_at: now })
        .where('id', 'in', plan.cancellations.map((c) => c.id))
        .execute()
    }

    const traceContext = activeTraceMetadata()
    await writeDecision(trx, {
      decision: {
        id: decisionId,
        call_id: call.callId,
        event_id: event.eventId,
        route,
        rule_set_version: ruleSet.version,
        rule_id: decision.ruleId,
        explanation,
        facts: JSON.stringify(facts),
        outcome: JSON.stringify(toStoredOutcome(decision, ids, plan.notes)),
        created_at: now,
      },
      assignments: fresh.map((a) => ({
        id: a.id,
        call_id: call.callId,
        decision_id: decisionId,
        agency: call.agency,
        queue: a.queue,
        role: a.role,
        status: a.status,
        due_at: a.dueAt,
        reserved_until: a.reservedUntil ?? null,
      })),
      outbox: fresh.map((a) => {
        const job: AssignmentJob = { assignmentId: a.id, callId: call.callId, agency: call.agency, queue: a.queue, role: a.role }
        return { assignment_id: a.id, queue: a.queue, job_id: jobIdFor(a.id), payload: JSON.stringify(job), trace_context: traceContext }
      }),
      transitions,
      call: {
        agency: call.agency,
        status: event.type === 'call.closed' ? 'closed' : 'open',
        nature_code: call.natureCode,
        priority: call.priority,
        flags: JSON.stringify(call.flags),
        location: call.location ? JSON.stringify(call.location) : null,
        caller: call.caller ? JSON.stringify(call.caller) : null,
        subject: call.subject ? JSON.stringify(call.subject) : null,
        description: call.description ?? null,
        subject_person_id: personId,
        address_key: addrKey,
        dispatcher_override: call.dispatcherOverride ?? null,
        disposition: call.disposition ?? current.disposition,
        mental_health: mentalHealthCall,
        route,
        decision_id: decisionId,
        last_occurred_at: occurredAt,
        updated_at: now,
        closed_at: event.type === 'call.closed' ? now : null,
      },
    })

    // Shadow mode (src/rule-sets/shadow.ts): the candidate decides the same facts; one row, no effect on this call.
    const shadow = deps.shadow?.current()
    if (shadow) await recordShadowDecision(trx, shadow, { decisionId, callId: call.callId, agency: call.agency, ruleSetVersion: ruleSet.version, decision }, facts)

    return {
      created: true,
      result: {
        eventId: event.eventId,
        callId: call.callId,
        applied: true,
        decision: {
          id: decisionId,
          route,
          assignments: plan.assignments.map((a, i) => ({ id: ids[i]!, queue: a.queue, role: a.role, status: a.status })),
          ruleSetVersion: ruleSet.version,
          ruleId: decision.ruleId,
          explanation,
          fallback: decision.fallback,
          override: decision.override,
          review: decision.review,
          followUp: decision.followUp,
          decidedAt: now.toISOString(),
        },
      },
    }
  }

  return { ingest }
}

export type CallService = ReturnType<typeof createCallService>

function explainPlan(plan: ReturnType<typeof planAssignments>, type: CallEvent['type']): string[] {
  const out: string[] = []
  if (type === 'call.closed') {
    if (plan.cancellations.length) out.push(`Call closed: ${plan.cancellations.length} open assignment(s) cancelled.`)
    const fu = plan.assignments.find((a) => a.queue === 'follow_up')
    if (fu?.dueAt) out.push(`Follow-up by the agency's embedded social worker due by ${fu.dueAt.toISOString()} (DESIGN rule 8).`)
  }
  for (const n of plan.notes) out.push(`${n[0]!.toUpperCase()}${n.slice(1)}.`)
  return out
}

function stripInternal<T extends { eventId?: string; facts?: unknown; trace?: unknown }>(view: T): Omit<T, 'eventId' | 'facts' | 'trace'> {
  const { eventId: _e, facts: _f, trace: _t, ...rest } = view
  return rest
}
