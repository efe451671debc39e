/**
 * A candidate that changes only CRU's hours: replay and shadow mode must show the calls it would
 * route differently. Stored facts carry the deciding version's CRU availability; each version
 * replays with its own hours, and keeps CRU at capacity (a fact of that moment) as it was.
 */
import t from 'tap'
import { callEventSchema } from '../../src/calls/schemas.js'
import { compileRuleSet, loadDefaultRuleSet, type RoutingFacts, type RuleSet } from '../../src/routing/index.js'
import { factsFor, NO_HISTORY } from '../../src/rule-sets/facts.js'
import { replay } from '../../src/rule-sets/replay.js'
import { shadowDecisionRow } from '../../src/rule-sets/shadow.js'
import { callEvent } from '../helpers/events.js'

const v1 = compileRuleSet(loadDefaultRuleSet())
// example-city-pd has CRU Mon–Fri 08:00–18:00 America/Chicago in the default rule set.
const withHours = (version: number, schedule: RuleSet['cru'][string]['schedule']) => {
  const doc = structuredClone(loadDefaultRuleSet())
  doc.version = version
  doc.cru['example-city-pd'] = { schedule }
  return compileRuleSet(doc)
}
const roundTheClock = withHours(3, 'always')
const saturdayMornings = withHours(4, [{ days: ['sat'], from: '08:00', to: '09:00' }])

/** Facts as ingest stores them: decided by v1 at `at`, optionally with `openCru` CRU assignments open. */
const stored = (callId: string, at: string, opts: { openCru?: number; eventType?: 'call.created' | 'call.updated'; cruHoldsCall?: boolean } = {}): { callId: string; facts: RoutingFacts } => {
  const { call } = callEventSchema.parse(callEvent({ natureCode: 'EDP', agency: 'example-city-pd', callId }))
  const { eventType = 'call.created', ...rest } = opts
  return { callId, facts: factsFor(v1, { eventType, call, at: new Date(at), history: NO_HISTORY, ...rest }) }
}
const sundayNight = stored('NIGHT', '2026-11-22T09:00:00Z') // Sunday 03:00 in Chicago: CRU closed under v1
const tuesdayNoon = stored('NOON', '2026-11-24T18:00:00Z') // Tuesday 12:00 in Chicago: CRU open under v1

t.test('the stored facts are what v1 saw', async (t) => {
  t.match(sundayNight.facts.cru, { available: false, reason: /^outside CRU hours for example-city-pd/ })
  t.same(tuesdayNoon.facts.cru, { available: true, reason: null })
})

t.test('replay: a candidate that keeps CRU open round the clock takes the night call from police', async (t) => {
  const r = replay([sundayNight, tuesdayNoon], roundTheClock, v1)
  t.same(r.baseline?.routeMix, { police: 1, cru: 1, co_response: 0, ems: 0, case_manager: 0 }, 'v1 replays its own decisions')
  t.equal(r.baseline?.fallbacks, 1)
  t.same(r.candidate.routeMix, { police: 0, cru: 2, co_response: 0, ems: 0, case_manager: 0 })
  t.equal(r.candidate.fallbacks, 0)
  t.same(r.changes?.calls.map((c) => [c.callId, c.from, c.to]), [['NIGHT', 'police', 'cru']])
})

t.test('replay: a candidate that shortens the hours loses the noon call to police', async (t) => {
  const r = replay([sundayNight, tuesdayNoon], saturdayMornings, v1)
  t.same(r.candidate.routeMix, { police: 2, cru: 0, co_response: 0, ems: 0, case_manager: 0 })
  t.same(r.changes?.calls.map((c) => [c.callId, c.from, c.to]), [['NOON', 'cru', 'police']])
})

t.test('replay: CRU at capacity stays at capacity whatever the hours', async (t) => {
  // The "*" team (the county line) has no limit in the default: give example-city-pd one.
  const doc = structuredClone(loadDefaultRuleSet())
  doc.cru['example-city-pd'] = { schedule: [{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '18:00' }], maxOpenAssignments: 2 }
  const limited = compileRuleSet(doc)
  const { call } = callEventSchema.parse(callEvent({ natureCode: 'EDP', agency: 'example-city-pd', callId: 'FULL' }))
  const full = { callId: 'FULL', facts: factsFor(limited, { eventType: 'call.created', call, at: new Date('2026-11-24T18:00:00Z'), history: NO_HISTORY, openCru: 2 }) }
  t.match(full.facts.cru, { available: false, reason: /^CRU at capacity/ })
  const r = replay([full], roundTheClock, limited)
  t.same(r.candidate.routeMix, r.baseline?.routeMix)
  t.equal(r.candidate.fallbacks, 1)
  t.equal(r.changes?.total, 0)
})

t.test('a call CRU already holds keeps CRU whatever the candidate’s hours', async (t) => {
  // An update at Tuesday noon of a call CRU holds: CRU is open under v1, so nothing in the stored
  // facts says CRU held it. Ingest knows, and tells shadow mode; replay cannot tell, and keeps CRU.
  const held = stored('HELD', '2026-11-24T18:00:00Z', { eventType: 'call.updated', cruHoldsCall: true })
  t.same(held.facts.cru, { available: true, reason: null })
  const live = v1.decide(held.facts)
  t.equal(live.route, 'cru')
  const decided = { decisionId: 'd-3', callId: 'HELD', agency: 'example-city-pd', ruleSetVersion: 1, decision: live }
  t.match(shadowDecisionRow(saturdayMornings, decided, held.facts, true), { shadow_route: 'cru', changed: false }, 'shadow mode: held, so no hours apply')
  t.match(shadowDecisionRow(saturdayMornings, decided, held.facts, false), { shadow_route: 'police', changed: true }, 'shadow mode: a call CRU does not hold gets the candidate’s hours')
  const r = replay([held], saturdayMornings, v1)
  t.equal(r.changes?.total, 0, 'replay: an update may be of a call CRU held, so CRU stays available')
  // An update stored with CRU closed by its hours was not held (a held call says so in its facts): the candidate’s hours apply.
  const night = stored('NIGHT-UPDATE', '2026-11-22T09:00:00Z', { eventType: 'call.updated' })
  t.same(replay([night], roundTheClock, v1).changes?.calls.map((c) => [c.from, c.to]), [['police', 'cru']])
})

t.test('shadow mode: the candidate decides the live facts with its own hours', async (t) => {
  const live = v1.decide(sundayNight.facts)
  t.equal(live.route, 'police')
  const row = shadowDecisionRow(roundTheClock, { decisionId: 'd-1', callId: 'NIGHT', agency: 'example-city-pd', ruleSetVersion: 1, decision: live }, sundayNight.facts)
  t.match(row, { live_route: 'police', shadow_route: 'cru', changed: true, shadow_version: 3 })
  const same = shadowDecisionRow(withHours(5, [{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '18:00' }]), { decisionId: 'd-2', callId: 'NIGHT', agency: 'example-city-pd', ruleSetVersion: 1, decision: live }, sundayNight.facts)
  t.match(same, { shadow_route: 'police', changed: false }, 'the same hours: the same route')
})
