import type { FastifyRequest } from 'fastify'
import type { Db } from '../db/connect.js'
import type { Route } from '../routing/index.js'
import type { RuleSetRegistry } from '../rule-sets/registry.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { callReadDetails, callReadGrant, HEALTH_QUEUES, seesHealthHistory } from '../auth/principal.js'
import { notFound } from '../http/errors.js'
import { loadDecisionView } from './repository.js'
import type { callViewSchema } from './schemas.js'
import type { z } from 'zod'

type CallView = z.infer<typeof callViewSchema>

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null)

/** Everything stored about a call, mapped explicitly to the API shape. */
export async function loadCallView(db: Db, callId: string): Promise<CallView | undefined> {
  const call = await db.selectFrom('calls').selectAll().where('call_id', '=', callId).executeTakeFirst()
  if (!call || !call.decision_id) return undefined
  const [events, decisionRows, assignments, transitions] = await Promise.all([
    db.selectFrom('call_events').select(['event_id', 'type', 'occurred_at', 'received_at', 'applied', 'decision_id']).where('call_id', '=', callId).orderBy('received_at').orderBy('event_id').execute(),
    db.selectFrom('decisions').select('id').where('call_id', '=', callId).orderBy('created_at').orderBy('id').execute(),
    db.selectFrom('assignments').selectAll().where('call_id', '=', callId).orderBy('seq').execute(),
    db
      .selectFrom('assignment_transitions')
      .innerJoin('assignments', 'assignments.id', 'assignment_transitions.assignment_id')
      .select(['assignment_transitions.assignment_id', 'from_status', 'to_status', 'assignment_transitions.role', 'actor', 'reason', 'at'])
      .where('assignments.call_id', '=', callId)
      .orderBy('assignment_transitions.id')
      .execute(),
  ])
  const decisions = await Promise.all(decisionRows.map((d) => loadDecisionView(db, d.id)))
  return {
    callId: call.call_id,
    agency: call.agency,
    status: call.status,
    natureCode: call.nature_code,
    priority: call.priority,
    route: call.route as Route,
    mentalHealth: call.mental_health,
    disposition: call.disposition,
    flags: call.flags,
    dispatcherOverride: call.dispatcher_override as Route | null,
    location: call.location,
    caller: call.caller,
    subject: call.subject,
    description: call.description,
    createdAt: call.created_at.toISOString(),
    updatedAt: call.updated_at.toISOString(),
    closedAt: iso(call.closed_at),
    events: events.map((e) => ({
      eventId: e.event_id,
      type: e.type as CallView['events'][number]['type'],
      occurredAt: e.occurred_at.toISOString(),
      receivedAt: e.received_at.toISOString(),
      applied: e.applied,
      decisionId: e.decision_id,
    })),
    decisions,
    assignments: assignments.map((a) => ({
      id: a.id,
      agency: a.agency,
      queue: a.queue as CallView['assignments'][number]['queue'],
      role: a.role as CallView['assignments'][number]['role'],
      status: a.status,
      disposition: a.disposition,
      dueAt: iso(a.due_at),
      caseManager: a.case_manager,
      createdAt: a.created_at.toISOString(),
      transitions: transitions
        .filter((t) => t.assignment_id === a.id)
        .map((t) => ({ from: t.from_status, to: t.to_status, role: t.role, actor: t.actor, reason: t.reason, at: t.at.toISOString() })),
    })),
  }
}

/**
 * The call as the request's key may read it, the read recorded in the audit log (`details` added to
 * the record, with how the read was granted when not as the call's agency). Another agency's call,
 * or one no queue of a narrowed console works, does not exist for the key: 404, as an unknown id.
 */
export async function readCallAs(db: Db, req: FastifyRequest, ruleSets: Pick<RuleSetRegistry, 'version'>, callId: string, details: Record<string, unknown> = {}): Promise<CallView> {
  const p = principalOf(req)
  const view = await loadCallView(db, callId)
  const grant = view && callReadGrant(p, view)
  if (!view || !grant) throw notFound(`call ${callId}`)
  const recorded = { ...details, ...callReadDetails(grant) }
  await audit(db, req, { action: 'call.read', targetType: 'call', targetId: view.callId, agency: view.agency, details: Object.keys(recorded).length ? recorded : undefined })
  return seesHealthHistory(p) ? view : await withoutHealthHistory(view, ruleSets)
}

/**
 * The decision without the behavioral-health history behind it (criminal-justice consoles): the
 * history facts, and the conditions of every rule whose trace tested one that depends on them: a
 * value, a result, even where the trace stops, each tells the answer. Which conditions those are
 * comes from the decision's own rule set; when that cannot be read, no rule shows its conditions.
 * The reasons on health-queue assignments go too: a CRU desk's words about the person; and whom a
 * case-management assignment is for, which tells that the person has a case manager: withheld
 * whether or not it names one, so that null does not tell the rest.
 */
export async function withoutHealthHistory(view: CallView, ruleSets: Pick<RuleSetRegistry, 'version'>): Promise<CallView> {
  return {
    ...view,
    assignments: view.assignments.map((a) =>
      HEALTH_QUEUES.has(a.queue)
        ? {
            ...a,
            ...(a.queue === 'case_management' ? { caseManager: '[withheld]' } : {}),
            transitions: a.transitions.map((x) => (x.reason === null ? x : { ...x, reason: '[withheld]' })),
          }
        : a,
    ),
    decisions: await Promise.all(
      view.decisions.map(async (d) => {
        const labels = (await ruleSets.version(d.ruleSetVersion))?.historyLabels
        const hidden = (condition: string) => !labels || labels.has(condition)
        return {
          ...d,
          facts: d.facts && typeof d.facts === 'object' ? { ...(d.facts as Record<string, unknown>), history: '[withheld]' } : d.facts,
          trace: d.trace.map((r) => (r.conditions.some((c) => hidden(c.condition)) ? { ...r, conditions: [] } : r)),
        }
      }),
    ),
  }
}
