/**
 * Facts for a call that is not being ingested: what /v1/routing/evaluate and the replay CLI (for
 * call events without stored facts) give the engine. Ingest builds the same facts inside its
 * transaction (src/calls/service.ts) from the same query, readCallContexts.
 */
import { z } from 'zod'
import { CRU_HOLDING_STATUSES } from '../assignments/state-machine.js'
import type { Executor } from '../db/connect.js'
import type { CallEvent } from '../calls/schemas.js'
import { readCallContexts } from '../calls/repository.js'
import { OUTSIDE_CRU_HOURS, cruAvailability, cruCapacity, EVENT_TYPES, ROUTES, type CompiledRuleSet, type EventType, type RoutingFacts } from '../routing/index.js'

export type History = RoutingFacts['history']
export const NO_HISTORY: History = Object.freeze({ priorCallsForSubject30d: 0, priorCallsAtAddress30d: 0, caseManagerActive: false })

export { lookupHistory } from '../calls/history.js'

/**
 * Open CRU assignments counting against the capacity of the CRU team that covers the call's agency
 * (DESIGN rule 7); undefined, with no query, when that team has no limit.
 */
export async function openCruCount(db: Executor, ruleSet: CompiledRuleSet, call: CallEvent['call']): Promise<number | undefined> {
  const capacity = cruCapacity(ruleSet.document, call.agency)
  if (!capacity) return undefined
  const [context] = await readCallContexts(db, [{ callId: call.callId, personId: null, addressKey: null, since: new Date(0), exclude: [], capacity, assignments: false }])
  return context!.openCru
}

/**
 * Whether CRU holds the call now (an open CRU assignment, as ingest counts them), which waives its
 * hours and capacity for it (factsFor). Only for a call of an agency `mayRead`: another's is not looked into.
 */
export async function cruHoldsStoredCall(db: Executor, callId: string, mayRead: (agency: string) => boolean): Promise<boolean> {
  const row = await db
    .selectFrom('calls as c')
    .innerJoin('assignments as a', 'a.call_id', 'c.call_id')
    .select('c.agency')
    .where('c.call_id', '=', callId)
    .where('a.queue', '=', 'cru')
    .where('a.status', 'in', CRU_HOLDING_STATUSES)
    .limit(1)
    .executeTakeFirst()
  return row !== undefined && mayRead(row.agency)
}

/**
 * Whether a call of one of `agencies` (its own, or one they hold an assignment on) names the
 * person, or is at the address (by its key): the history a key limited to those agencies may have
 * looked up for it. Its supervisors read those calls' decisions, facts and all; anyone else's
 * history is county-wide data (case links are for county-wide keys only). A scrubbed call no
 * longer names anyone, nor is it anywhere.
 */
export async function inCallsOf(db: Executor, where: { personId: string } | { addressKey: string }, agencies: readonly string[]): Promise<boolean> {
  const [column, value] = 'personId' in where ? (['c.subject_person_id', where.personId] as const) : (['c.address_key', where.addressKey] as const)
  const row = await db
    .selectFrom('calls as c')
    .select('c.call_id')
    .where(column, '=', value)
    .where((eb) =>
      eb.or([
        eb('c.agency', 'in', agencies),
        eb.exists(eb.selectFrom('assignments as a').select('a.id').whereRef('a.call_id', '=', 'c.call_id').where('a.agency', 'in', agencies)),
      ]),
    )
    .limit(1)
    .executeTakeFirst()
  return row !== undefined
}

/**
 * Facts for `call` as the rule set would see them at `at`; CRU availability from the rule set's
 * schedule and capacity unless given. `cruHoldsCall`: the call already has an open CRU assignment.
 */
export function factsFor(
  ruleSet: CompiledRuleSet,
  input: { eventType: EventType; call: CallEvent['call']; at: Date; history: History; cru?: RoutingFacts['cru']; openCru?: number | undefined; cruHoldsCall?: boolean },
): RoutingFacts {
  const { call } = input
  let cru: RoutingFacts['cru'] = input.cru ?? cruAvailability(ruleSet.document, call.agency, input.at, input.openCru)
  // Hours and capacity decide whether CRU takes on a new call (DESIGN rule 7): a call CRU already
  // holds stays available to it, as the capacity count already leaves the call's own assignment out.
  // The reason a new call would get is kept in the facts: the decision says why, and replays as made.
  if (input.cruHoldsCall && !cru.available) cru = { available: true, reason: null, unavailableForNewCalls: cru.reason ?? 'CRU unavailable' }
  return {
    eventType: input.eventType,
    agency: call.agency,
    natureCode: call.natureCode,
    priority: call.priority,
    flags: call.flags,
    dispatcherOverride: call.dispatcherOverride ?? null,
    at: input.at.toISOString(),
    cru,
    history: input.history,
  }
}

/**
 * Facts decided under one version as `ruleSet` would have seen them, for replay and shadow mode:
 * CRU's hours are each version's own, so a candidate that extends them shows the calls CRU would
 * have taken, and one that shortens them the calls it would have lost. CRU unavailable for another
 * reason (at capacity: a fact of that moment, whose count is not stored) stays so, as does a call
 * CRU already held: no hours apply to it. For the version that made the decision this gives the
 * facts back as they were.
 *
 * `cruHoldsCall`: whether CRU held the call, when known (ingest knows it for shadow mode). Stored
 * facts say so only when CRU was otherwise unavailable (`unavailableForNewCalls`), so for replay a
 * CRU that was available to a call it may have held (any event but the call's first) stays available.
 */
export function withCruHoursOf(ruleSet: CompiledRuleSet, facts: RoutingFacts, cruHoldsCall?: boolean): RoutingFacts {
  const { cru } = facts
  if (cruHoldsCall === true || cru.unavailableForNewCalls !== undefined) return facts
  if (!cru.available && !cru.reason?.startsWith(OUTSIDE_CRU_HOURS)) return facts
  if (cru.available && cruHoldsCall === undefined && facts.eventType !== 'call.created') return facts
  const hours = cruAvailability(ruleSet.document, facts.agency, new Date(facts.at))
  if (hours.available === cru.available && hours.reason === cru.reason) return facts
  return { ...facts, cru: hours }
}

export const historySchema = z
  .object({
    priorCallsForSubject30d: z.number().int().min(0),
    priorCallsAtAddress30d: z.number().int().min(0),
    caseManagerActive: z.boolean(),
    caseManager: z
      .string()
      .min(1)
      .max(128)
      .optional()
      .describe('The active link’s case manager (DESIGN rule 6), only with caseManagerActive: whom a case-management assignment is for. No rule reads it'),
  })
  .strict()
  .refine((h) => h.caseManager === undefined || h.caseManagerActive, { path: ['caseManager'], message: 'a case manager comes with an active link (caseManagerActive)' })

export const factsSchema = z
  .object({
    eventType: z.enum(EVENT_TYPES),
    agency: z.string(),
    natureCode: z.string(),
    priority: z.number().int(),
    flags: z.record(z.string(), z.boolean()),
    dispatcherOverride: z.enum(ROUTES).nullable(),
    at: z.string(),
    cru: z.object({
      available: z.boolean(),
      reason: z.string().nullable(),
      unavailableForNewCalls: z.string().optional().describe('Set when CRU is available only because it already holds the call: why it would take no new call now'),
    }),
    history: historySchema,
  })
  .meta({ id: 'RoutingFacts' })

