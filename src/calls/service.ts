import { randomUUID } from 'node:crypto'
import type { Transaction } from 'kysely'
import { cruHolding } from '../assignments/state-machine.js'
import type { Db } from '../db/connect.js'
import type { Database } from '../db/schema.js'
import { AppError, isUnavailableError, LOCK_NOT_AVAILABLE } from '../http/errors.js'
import { canonicalJson, sha256 } from '../lib/canonical-json.js'
import { assignmentJob, jobIdFor } from '../queue/queues.js'
import { cruCapacity, cruTeamKey, type RoutingDecision, type RoutingFacts } from '../routing/index.js'
import type { RuleSetRegistry } from '../rule-sets/registry.js'
import { activeTraceMetadata } from '../telemetry/context.js'
import { shadowDecisionRow, type ShadowSource } from '../rule-sets/shadow.js'
import { factsFor } from '../rule-sets/facts.js'
import { createGroupCommit, type Settlement } from './group-commit.js'
import { caseManagerFor, historyKeys, historyOf } from './history.js'
import { planAssignments } from './plan.js'
import { callsLockedElsewhere, loadDecisionView, lockCallsOfNewEvents, lockCruTeams, readCallContexts, sameAsStoredEvent, toStoredOutcome, writeBatch, type BatchWrite, type LockedCall, type StoredEvent } from './repository.js'
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
  /** Group commit (src/calls/group-commit.ts): events per transaction, and transactions at once. */
  batch?: { maxSize?: number; concurrency?: number; holdMs?: number; maxQueued?: number; onBatch?: (size: number) => void }
}

export interface IngestOutcome {
  /** true: this post stored the event (201); false: a repeat of a stored event (200). */
  created: boolean
  result: CallEventResult
}

interface Pending {
  event: CallEvent
  bodyHash: string
  /** The event's call.created or call.updated is the service's to say (see ingest's `typeByCall`). */
  typeByCall: boolean
  mayTouchAgency: ((agency: string) => boolean) | undefined
  /** The posting request's trace, captured before the event joins a batch that runs in another's context. */
  traceContext: string | null
}

/** What the batch's transaction did with one event; repeats and stale events are answered after the commit. */
type Applied = Settlement<IngestOutcome> | { stale: string } | { repeat: StoredEvent }

/** Another transaction stored one of the batch's eventIds first: roll back, and the repeat is answered from it. */
class LostRace extends Error {}
const UNIQUE_VIOLATION = '23505'
// The unique keys that tell an eventId stored by another transaction: the event's own, its decision's.
const EVENT_KEYS = new Set(['call_events_pkey', 'decisions_event_id_key'])

// Microseconds only when there are some: `…00.000Z` for a time posted to the millisecond.
const trimMicroseconds = (utc: string): string => utc.replace(/(\.\d{3})000Z$/, '$1Z')

export function createCallService(deps: CallServiceDeps) {
  const clock = deps.now ?? (() => new Date())
  const committer = createGroupCommit<Pending, IngestOutcome>({
    keys: (p) => [`call:${p.event.call.callId}`, `event:${p.event.eventId}`],
    run: runBatch,
    maxBatch: deps.batch?.maxSize ?? 32,
    concurrency: deps.batch?.concurrency ?? 2,
    // A second transaction is for a batch that is stuck, not for a light load (INGEST_BATCH_HOLD_MS).
    holdMs: deps.batch?.holdMs ?? 10,
    maxQueued: deps.batch?.maxQueued ?? 2000,
    overloaded: () => new AppError('service-unavailable', 'too many call events waiting to be stored; retry'),
    gaveUp: () => new AppError('service-unavailable', 'the event could not be stored; retry'),
    ...(deps.batch?.onBatch ? { onBatch: deps.batch.onBatch } : {}),
  })

  /**
   * `mayTouchAgency`: the caller's agency scope; an event for a call that belongs to an agency
   * outside it is refused (a CAD cannot take over another agency's call by its id).
   * `typeByCall`: the poster cannot know whether its event creates the call (an EIDO does not say):
   * a call.created or call.updated becomes call.created if the call is new, call.updated if not,
   * decided under the call's lock in the transaction that stores it, and a repeat is the same event
   * whichever of the two it was posted as. Read before that transaction, the answer could change
   * before the commit (another instance commits a later document of the incident), and two posts
   * of one document were stored and answered as different events: a 409.
   */
  function ingest(event: CallEvent, scope: { mayTouchAgency?: (agency: string) => boolean; typeByCall?: boolean } = {}): Promise<IngestOutcome> {
    // A new call belongs to the event's agency: checked here, no batch ever creates a call it must refuse.
    if (scope.mayTouchAgency && !scope.mayTouchAgency(event.call.agency)) {
      return Promise.reject(new AppError('forbidden', `this key may not post events for agency ${event.call.agency}`))
    }
    return committer.submit({
      event,
      bodyHash: sha256(canonicalJson(event)),
      typeByCall: scope.typeByCall === true,
      mayTouchAgency: scope.mayTouchAgency,
      traceContext: activeTraceMetadata(),
    })
  }

  async function runBatch(items: Pending[]): Promise<Settlement<IngestOutcome>[]> {
    try {
      const applied = await deps.db.transaction().execute((trx) => apply(trx, items))
      // A repeat is answered from what is stored, a stale event from its call's current decision:
      // both read once the batch has committed.
      return await Promise.all(
        applied.map((a, k) => ('repeat' in a ? settle(() => answerRepeat(items[k]!, a.repeat)) : 'stale' in a ? settle(() => answerStale(items[k]!, a.stale)) : a)),
      )
    } catch (err) {
      if ((err as { code?: string }).code === LOCK_NOT_AVAILABLE) return await afterLockTimeout(items, err)
      return items.map(() => failed(err, items.length))
    }
  }

  /**
   * The batch waited past the lock timeout (DATABASE_LOCK_TIMEOUT_MS): for a call's row that another
   * transaction holds (a session left open, a stuck instance), or for something else (a new call
   * another instance is inserting, a CRU team's places, a table). The events of the calls locked
   * right now answer 503 at once; the others go again in the next batch, and that run does not count
   * against their attempts: more events of the locked call may be waiting, and each will share a
   * batch with them in turn. When none of the batch's calls is locked, each event goes again alone,
   * so only those that wait again fail. When the question itself waits too long (the calls table is
   * locked), every event answers 503.
   */
  async function afterLockTimeout(items: Pending[], err: unknown): Promise<Settlement<IngestOutcome>[]> {
    const waited = (what: string) => ({ error: new AppError('service-unavailable', `${what} is locked by another transaction; retry`, { cause: err }) })
    if (items.length === 1) return [waited('a row or table this event needs')]
    let locked: Set<string>
    try {
      locked = await callsLockedElsewhere(deps.db, items.map((p) => p.event.call.callId))
    } catch (probeErr) {
      return items.map(() => ({ error: probeErr }))
    }
    if (!locked.size) return items.map(() => ({ retry: true, alone: true }))
    return items.map(({ event }) => (locked.has(event.call.callId) ? waited(`call ${event.call.callId}`) : { retry: true, uncounted: true }))
  }

  function failed(err: unknown, size: number): Settlement<IngestOutcome> {
    // Another transaction stored one of these eventIds first (its decision's unique key tells, or
    // the count of events stored): run again, and the repeat is answered from what it stored.
    const { code = '', constraint = '' } = err as { code?: string; constraint?: string }
    if (err instanceof LostRace || (code === UNIQUE_VIOLATION && EVENT_KEYS.has(constraint))) return { retry: true, alone: size > 1 }
    // A deadlock or serialisation failure (SQLSTATE class 40) is Postgres asking for exactly this: again.
    if (code.startsWith('40')) return { retry: true, alone: size > 1 }
    // Postgres is down or too slow: every event would fail the same way alone, so answer 503 now.
    if (isUnavailableError(err) || size === 1) return { error: err }
    // Anything else (a constraint one event broke, a bug): run each alone, so only the bad one fails.
    return { retry: true, alone: true }
  }

  async function answerRepeat(posted: Pending, stored: StoredEvent): Promise<IngestOutcome> {
    // The type it was stored with was the service's word, not the poster's: not a difference.
    const p = isOpenType(stored.type) ? withType(posted, stored.type) : posted
    const { eventId } = p.event
    // The call may belong to another agency (by now, or a CAD of another agency used the same
    // eventId): its decision is not this key's to read, nor its call id to learn.
    if (p.mayTouchAgency && !p.mayTouchAgency(stored.agency)) {
      throw new AppError('forbidden', `event ${eventId} was already received for a call outside this key's agencies; eventIds are unique across every CAD of the service`)
    }
    if (stored.body_hash !== p.bodyHash && !(await sameAsStoredEvent(deps.db, p.event))) {
      throw new AppError('event-conflict', `event ${eventId} was already received with a different body`, { extra: { eventId } })
    }
    if (!stored.decision_id) throw new Error(`event ${eventId} has no decision`) // cannot happen: written in one transaction
    const decision = await loadDecisionView(deps.db, stored.decision_id)
    return { created: false, result: { eventId, callId: stored.call_id, applied: stored.applied, decision: stripInternal(decision) } }
  }

  async function answerStale(p: Pending, decisionId: string): Promise<IngestOutcome> {
    const decision = await loadDecisionView(deps.db, decisionId)
    return { created: true, result: { eventId: p.event.eventId, callId: p.event.call.callId, applied: false, decision: stripInternal(decision) } }
  }

  /**
   * One transaction for the batch: find its repeats and lock the calls of the rest, read what routing
   * needs about all of them, decide each event in arrival order, write everything in one statement.
   * Each event sees what the batch's earlier events created: its history counts their new calls,
   * its CRU capacity their new CRU assignments. (A subject or address that an earlier event changes
   * on an existing call is seen from the next batch on: concurrent events, as before batching.)
   */
  async function apply(trx: Transaction<Database>, batch: Pending[]): Promise<Applied[]> {
    const now = clock()
    const ruleSet = deps.ruleSets.active()
    const shadow = deps.shadow?.current()
    const out = new Array<Applied>(batch.length)
    const w: BatchWrite = { events: [], decisions: [], assignments: [], roleChanges: [], roleChangeTransitions: [], cancellations: [], outbox: [], transitions: [], cancellationTransitions: [], shadow: [], calls: [], closes: [] }

    // Serialise the events of one call: the first writer creates the row, everyone locks it, and the
    // rows come back as they were before this batch; repeats come back instead — one round trip.
    const keys = batch.map((p) => historyKeys(p.event.call, now))
    const { calls, stored } = await lockCallsOfNewEvents(
      trx,
      batch.map((p) => p.event.eventId),
      batch.map(({ event: { call, occurredAt } }, k) => ({
        call_id: call.callId,
        agency: call.agency,
        status: 'open',
        nature_code: call.natureCode,
        priority: call.priority,
        flags: call.flags,
        route: 'police',
        // As written, not as a Date: Postgres keeps the microseconds a Date would drop.
        last_occurred_at: occurredAt,
        // A new call is someone's prior call for the batch's later events already (DESIGN rule 6).
        subject_person_id: keys[k]!.personId,
        address_key: keys[k]!.addressKey,
      })),
    )

    // lateClose: a close dated before the call's last applied event (see below).
    const live: { k: number; p: Pending; current: LockedCall; isNew: boolean; lateClose: boolean }[] = []
    batch.forEach((posted, k) => {
      const repeat = stored.get(posted.event.eventId)
      if (repeat) {
        out[k] = { repeat }
        return
      }
      const current = calls.get(posted.event.call.callId)!
      const isNew = current.decision_id === null
      const p = withType(posted, isNew ? 'call.created' : 'call.updated')
      const { event } = p
      if (p.mayTouchAgency && !p.mayTouchAgency(current.agency)) {
        out[k] = { error: new AppError('forbidden', `this key may not post events for call ${event.call.callId}`) }
        return
      }
      // An event older than one already applied, or a second close, is kept for the record only.
      // A first close is the end of the incident whenever it is dated: a CAD's positions disagree on
      // the time by a second or two, and a close dated just before the last update must not leave
      // the call open for ever (its CRU place taken, its assignments escalating, no follow-up). It
      // closes the call, whose details stay those of the newer event.
      const older = !isNew && current.older
      const closing = event.type === 'call.closed'
      const stale = !isNew && (current.status === 'closed' ? closing || older : older && !closing)
      if (stale) {
        w.events.push(eventRow(p, false, current.decision_id))
        out[k] = { stale: current.decision_id! }
        return
      }
      if (!isNew && current.status === 'closed') {
        out[k] = {
          error: new AppError('call-closed', `call ${event.call.callId} is closed (this service applied its close at ${current.closed_at?.toISOString()}); a closed call takes no ${event.type} dated after its last event`, {
            extra: { callId: event.call.callId },
          }),
        }
        return
      }
      live.push({ k, p, current, isNew, lateClose: older && closing })
    })

    const capacities = live.map(({ p }) => cruCapacity(ruleSet.document, p.event.call.agency))
    // A team with a limit: no other ingest may count it until this batch has committed its places.
    await lockCruTeams(trx, [...new Set(capacities.flatMap((c) => (c ? [cruTeamKey(c)] : [])))])
    const contexts = await readCallContexts(
      trx,
      live.map(({ k, p, isNew }, j) => ({
        callId: p.event.call.callId,
        ...keys[k]!,
        // Calls this batch creates for later events do not exist yet for this one.
        exclude: live.slice(j + 1).flatMap((l) => (l.isNew ? [l.p.event.call.callId] : [])),
        capacity: capacities[j]!,
        assignments: !isNew,
      })),
    )

    // CRU assignments the batch's earlier events opened (+) or cancelled (-), per team.
    const cruDelta = new Map<string, number>()
    live.forEach(({ k, p, current, isNew, lateClose }, j) => {
      const { event } = p
      const { call } = event
      // The agency the call has after this event: a late close leaves it as the newer event set it.
      const agency = lateClose ? current.agency : call.agency
      const context = contexts[j]!
      const capacity = capacities[j]!
      const team = capacity && cruTeamKey(capacity)
      const openCru = team ? context.openCru! + (cruDelta.get(team) ?? 0) : undefined
      const { personId, addressKey: addrKey } = keys[k]!
      // CRU's hours and capacity are about taking on a new call: one it already holds stays its own.
      const cruHoldsCall = context.assignments.some((a) => cruHolding(a.queue, a.status))
      const facts = factsFor(ruleSet, { eventType: event.type, call, at: now, history: historyOf(context), openCru, cruHoldsCall })
      const decision = ruleSet.decide(facts)
      const mentalHealthCall = current.mental_health || decision.derived.mentalHealthIndicator
      const existing = context.assignments
      const plan = planAssignments({
        eventType: event.type,
        decision,
        existing,
        mentalHealthCall,
        now,
        defaultFollowUpHours: deps.followUpDeadlineHours,
        followUpOfferHours: deps.followUpDueHours ?? 0,
        routes: ruleSet.document.routes,
      })

      const decisionId = randomUUID()
      const ids = plan.assignments.map((a) => a.id ?? randomUUID())
      const fresh = plan.assignments.map((a, i) => ({ ...a, id: ids[i]! })).filter((_, i) => plan.assignments[i]!.id === undefined)
      // A close keeps the route the call was handled under; the rule still decides its follow-up.
      const keptRoute = event.type === 'call.closed' && !isNew ? (current.route as RoutingDecision['route']) : null
      const route = keptRoute ?? plan.route ?? decision.route
      const explanation = [
        ...(lateClose
          ? [
              `Close dated ${trimMicroseconds(current.posted_at_text)}, before the call's last applied event (${trimMicroseconds(current.last_occurred_text)}): it closes the call, whose details stay those of that later event; its disposition is recorded.`,
            ]
          : []),
        ...(keptRoute && keptRoute !== decision.route
          ? [`Call closed under route ${keptRoute}, which it keeps; ${decision.override ? 'the closing event\'s dispatcher override' : `of its closing facts alone rule ${decision.ruleId}`} would make it ${decision.route}:`]
          : []),
        decision.explanation,
        ...explainHeldCru(facts, decision, event.type),
        ...explainPlan(plan, event.type),
      ].join(' ')
      const before = (id: string) => existing.find((e) => e.id === id)!

      w.events.push(eventRow(p, true, decisionId))
      w.decisions.push({
        id: decisionId,
        call_id: call.callId,
        event_id: event.eventId,
        route,
        rule_set_version: ruleSet.version,
        rule_id: decision.ruleId,
        explanation,
        facts,
        outcome: toStoredOutcome(decision, ids, plan.notes),
        created_at: now,
      })
      for (const a of fresh) {
        // DESIGN rule 6: a case-management assignment is for the case manager this decision saw, kept
        // as seen: the link may change afterwards, the assignment does not.
        const caseManager = caseManagerFor(a.queue, facts.history)
        w.assignments.push({
          id: a.id,
          call_id: call.callId,
          decision_id: decisionId,
          agency,
          queue: a.queue,
          role: a.role,
          status: a.status,
          due_at: a.dueAt,
          reserved_until: a.reservedUntil ?? null,
          case_manager: caseManager,
        })
        const job = assignmentJob({ id: a.id, callId: call.callId, agency, queue: a.queue, role: a.role, caseManager })
        w.outbox.push({ assignment_id: a.id, queue: a.queue, job_id: jobIdFor(a.id), payload: job, trace_context: p.traceContext })
        w.transitions.push({
          assignment_id: a.id,
          from_status: null,
          to_status: a.status,
          role: a.role,
          actor: 'router',
          reason: a.reservedUntil ? `decision ${decision.ruleId}; reserved until ${a.reservedUntil.toISOString()}` : `decision ${decision.ruleId}`,
          // The feed's trigger cannot see assignments created in the same statement, so the writer says.
          feed_agency: agency,
          feed_queue: a.queue,
        })
      }
      // Only what the plan changes: a worker or a console may move these assignments meanwhile (the
      // call's lock does not cover them), and their status is theirs to keep.
      // The feed's agency and queue of an assignment that exists are its own, which the trigger looks
      // up: not the call's, which a transfer to another agency changes while the assignments stay
      // with the agency that took them (its consoles list and move them, and must hear of them).
      for (const c of plan.roleChanges) {
        w.roleChanges.push({ id: c.id, role: c.to, updated_at: now })
        // (Its status, from and to, is the row's when written: see writeBatch.)
        w.roleChangeTransitions.push({ assignment_id: c.id, role: c.to, actor: 'router', reason: `role ${c.from} → ${c.to}: ${c.reason}` })
      }
      for (const c of plan.cancellations) {
        const b = before(c.id)
        w.cancellations.push({ id: c.id, updated_at: now })
        w.cancellationTransitions.push({
          assignment_id: c.id,
          // (from_status: the row's when the write locks it; see writeBatch)
          to_status: 'cancelled',
          role: b.role,
          actor: 'cad',
          reason: `call closed${call.disposition ? ` (${call.disposition})` : ''}`,
        })
      }
      const count = (key: string, n: number) => cruDelta.set(key, (cruDelta.get(key) ?? 0) + n)
      if (team) {
        const opened = fresh.filter((a) => cruHolding(a.queue, a.status)).length
        if (opened) count(team, opened)
      }
      // A cancelled CRU assignment gives its place back to the team of the agency that holds it (the
      // one the counts go by), not the close's: a call handed to another agency keeps its assignments
      // with the agency that took them, and a close dated before the hand-over names the one before.
      for (const c of plan.cancellations) {
        const b = before(c.id)
        const held = cruHolding(b.queue, c.from) ? cruCapacity(ruleSet.document, b.agency) : null
        if (held) count(cruTeamKey(held), -1)
      }
      if (lateClose) {
        // Only what the close itself says: the call's details, and the time of its latest event, are the newer event's.
        w.closes.push({
          call_id: call.callId,
          status: 'closed',
          disposition: call.disposition ?? current.disposition,
          mental_health: mentalHealthCall,
          route,
          decision_id: decisionId,
          updated_at: now,
          closed_at: now,
        })
      } else w.calls.push({
        call_id: call.callId,
        agency: call.agency,
        status: event.type === 'call.closed' ? 'closed' : 'open',
        nature_code: call.natureCode,
        priority: call.priority,
        flags: call.flags,
        location: call.location ?? null,
        caller: call.caller ?? null,
        subject: call.subject ?? null,
        description: call.description ?? null,
        subject_person_id: personId,
        address_key: addrKey,
        dispatcher_override: call.dispatcherOverride ?? null,
        disposition: call.disposition ?? current.disposition,
        mental_health: mentalHealthCall,
        route,
        decision_id: decisionId,
        last_occurred_at: event.occurredAt,
        updated_at: now,
        closed_at: event.type === 'call.closed' ? now : null,
      })
      // Shadow mode (src/rule-sets/shadow.ts): the candidate decides the same facts; one row, no effect on this call.
      const shadowRow = shadow && shadowDecisionRow(shadow, { decisionId, callId: call.callId, agency: call.agency, ruleSetVersion: ruleSet.version, decision }, facts, cruHoldsCall)
      if (shadowRow) w.shadow.push(shadowRow)

      out[k] = {
        value: {
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
        },
      }
    })

    if (w.events.length && (await writeBatch(trx, w)) !== w.events.length) throw new LostRace()
    return out
  }

  return { ingest }
}

export type CallService = ReturnType<typeof createCallService>

const isOpenType = (type: string): type is 'call.created' | 'call.updated' => type === 'call.created' || type === 'call.updated'

/** The event as `type`, when its type is the service's to say and it is not a close. */
function withType(p: Pending, type: 'call.created' | 'call.updated'): Pending {
  if (!p.typeByCall || !isOpenType(p.event.type) || p.event.type === type) return p
  const event = { ...p.event, type }
  return { ...p, event, bodyHash: sha256(canonicalJson(event)) }
}

function eventRow(p: Pending, applied: boolean, decisionId: string | null): BatchWrite['events'][number] {
  const { event } = p
  return {
    event_id: event.eventId,
    call_id: event.call.callId,
    type: event.type,
    occurred_at: event.occurredAt,
    body_hash: p.bodyHash,
    body: event,
    applied,
    decision_id: decisionId,
  }
}

async function settle<R>(f: () => Promise<R>): Promise<Settlement<R>> {
  try {
    return { value: await f() }
  } catch (error) {
    return { error }
  }
}

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

/** Why CRU counted as available for a call it already holds, when a new call would not get it (DESIGN rule 7). */
function explainHeldCru(facts: RoutingFacts, decision: RoutingDecision, type: CallEvent['type']): string[] {
  const waived = facts.cru.unavailableForNewCalls
  if (!waived || type === 'call.closed' || !decision.assignments.some((a) => a.queue === 'cru')) return []
  return [`CRU already holds this call, so it stays available for it (principle 7 governs new calls, which CRU would not take now: ${waived}).`]
}

function stripInternal<T extends { eventId?: string; facts?: unknown; trace?: unknown }>(view: T): Omit<T, 'eventId' | 'facts' | 'trace'> {
  const { eventId: _e, facts: _f, trace: _t, ...rest } = view
  return rest
}
