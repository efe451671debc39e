import t from 'tap'
import { planAssignments, routeLedBy, type ExistingAssignment } from '../../src/calls/plan.js'
import { loadDefaultRuleSet } from '../../src/routing/default-rule-set.js'
import { ROUTES, type AssignmentSpec, type Route } from '../../src/routing/index.js'

const now = new Date('2026-11-23T15:00:00Z')
// The shipped rule set's route table; a decision's route is the one whose responders it asks for.
const routes = loadDefaultRuleSet().routes
const named = (assignments: AssignmentSpec[]): Route => {
  const same = ROUTES.filter((r) => JSON.stringify(routes[r]) === JSON.stringify(assignments))
  if (same.length !== 1) throw new Error(`no route asks for exactly ${JSON.stringify(assignments)}`)
  return same[0]!
}
const decision = (assignments: AssignmentSpec[], extra: { override?: boolean; followUp?: boolean; route?: Route } = {}) => ({
  route: extra.route ?? named(assignments),
  assignments,
  followUp: extra.followUp ? { queue: 'follow_up' as const, dueWithinHours: 72 } : null,
  override: extra.override ? { route: 'cru' as const, overriddenRuleId: 'x' } : null,
})
const base = { mentalHealthCall: false, now, defaultFollowUpHours: 72, routes }
const summary = (p: ReturnType<typeof planAssignments>) => p.assignments.map((a) => `${a.queue}:${a.role}${a.id ? `=${a.id}` : '+'}`)

t.test('a new call creates every assignment of the decision', async (t) => {
  const p = planAssignments({ ...base, eventType: 'call.created', existing: [], decision: decision([{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }]) })
  t.same(summary(p), ['police:primary+', 'cru:support+'])
  t.same(p.roleChanges, [])
  t.same(p.cancellations, [])
})

t.test('escalation adds police as primary and demotes CRU to support, withdrawing nothing', async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'a1', queue: 'cru', role: 'primary', status: 'acknowledged' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }]) })
  t.same(summary(p), ['police:primary+', 'cru:support=a1'])
  t.same(p.roleChanges, [{ id: 'a1', from: 'primary', to: 'support', reason: 'police is now primary' }])
})

t.test('de-escalation keeps police as primary and keeps what was assigned', async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'p1', queue: 'police', role: 'primary', status: 'offered' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.same(summary(p), ['cru:support+', 'police:primary=p1'])
  t.match(p.notes.join(' '), /police stays primary/)
  t.match(p.notes.join(' '), /kept from earlier decisions: police/)
  t.equal(p.route, 'co_response', 'police still leads, with CRU beside: not a CRU call')
  t.match(p.notes.join(' '), /route is co_response, not cru/)
})

t.test("the plan's route is the rule's while the call has what the rule asked for", async (t) => {
  const fresh = planAssignments({ ...base, eventType: 'call.created', existing: [], decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.equal(fresh.route, 'cru')
  const escalated = planAssignments({
    ...base,
    eventType: 'call.updated',
    existing: [{ id: 'a1', queue: 'cru', role: 'primary', status: 'acknowledged' }],
    decision: decision([{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }]),
  })
  t.equal(escalated.route, 'co_response')
  t.notMatch(escalated.notes.join(' '), /route is/)
  const closed = planAssignments({ ...base, eventType: 'call.closed', existing: [], decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.equal(closed.route, null, 'a close keeps the call its route: the service says which')
})

t.test('responders merely kept beside the rule\'s primary leave the rule\'s route; a kept primary names it', async (t) => {
  // The mental-health flag came off: the rule asks for police alone, CRU stays on the call beside them.
  const existing: ExistingAssignment[] = [
    { id: 'p1', queue: 'police', role: 'primary', status: 'accepted' },
    { id: 'c1', queue: 'cru', role: 'support', status: 'acknowledged' },
  ]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'police', role: 'primary' }]) })
  t.same(summary(p), ['police:primary=p1', 'cru:support=c1'])
  t.equal(p.route, 'police', 'police lead it, as the rule says; CRU is listed as kept')
  t.match(p.notes.join(' '), /kept from earlier decisions: cru/)
  // CRU keeps a call a case manager would take, so it stays CRU's.
  const held = planAssignments({
    ...base,
    eventType: 'call.updated',
    existing: [{ id: 'c2', queue: 'cru', role: 'primary', status: 'offered' }],
    decision: decision([{ queue: 'case_management', role: 'primary' }, { queue: 'cru', role: 'support' }]),
  })
  t.same(summary(held), ['case_management:support+', 'cru:primary=c2'])
  t.equal(held.route, 'cru')
})

t.test("a kept primary's route comes from the rule set's own table", async (t) => {
  // A county whose police route always brings CRU along: police kept over CRU is that route.
  const custom = { ...routes, police: [{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }], co_response: [{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }, { queue: 'ems', role: 'support' }] } as typeof routes
  const existing: ExistingAssignment[] = [{ id: 'p1', queue: 'police', role: 'primary', status: 'offered' }]
  const p = planAssignments({ ...base, routes: custom, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.same(summary(p), ['cru:support+', 'police:primary=p1'])
  t.equal(p.route, 'police', 'its table calls police with CRU beside them police')
  t.equal(routeLedBy([{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }], routes), 'co_response', 'the shipped table calls it a co-response')
  // No route of the table, or two alike, for a police-led call: the shipped names, never the rule's
  // CRU route.
  const twins = { ...routes, co_response: routes.police } as typeof routes
  t.equal(routeLedBy([{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }], twins), 'co_response')
  t.equal(routeLedBy([{ queue: 'police', role: 'primary' }], twins), 'police')
  const noMatch = { ...routes, police: [{ queue: 'police', role: 'primary' }, { queue: 'ems', role: 'support' }], co_response: [{ queue: 'police', role: 'primary' }, { queue: 'cru', role: 'support' }, { queue: 'ems', role: 'support' }] } as typeof routes
  const kept = planAssignments({ ...base, routes: noMatch, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }], { route: 'cru' }) })
  t.equal(kept.route, 'co_response', 'police lead it with CRU beside them: never stored as cru')
})

t.test("a dispatcher's route stands, whatever is kept beside it", async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'p1', queue: 'police', role: 'primary', status: 'offered' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: { ...decision([{ queue: 'cru', role: 'primary' }], { override: true }), route: 'cru' } })
  t.same(summary(p), ['cru:primary+', 'police:support=p1'])
  t.equal(p.route, 'cru')
})

t.test('a dispatcher override hands primacy over even to a less protective responder', async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'p1', queue: 'police', role: 'primary', status: 'offered' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }], { override: true }) })
  t.same(summary(p), ['cru:primary+', 'police:support=p1'])
})

t.test('terminal assignments are not reused: a declined CRU assignment is replaced', async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'c1', queue: 'cru', role: 'primary', status: 'declined' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.same(summary(p), ['cru:primary+'])
})

t.test('an unchanged update changes nothing', async (t) => {
  const existing: ExistingAssignment[] = [{ id: 'c1', queue: 'cru', role: 'primary', status: 'offered' }]
  const p = planAssignments({ ...base, eventType: 'call.updated', existing, decision: decision([{ queue: 'cru', role: 'primary' }]) })
  t.same(summary(p), ['cru:primary=c1'])
  t.same(p.roleChanges, [])
})

t.test('close cancels open assignments only, and schedules the follow-up of a mental-health call', async (t) => {
  const existing: ExistingAssignment[] = [
    { id: 'c1', queue: 'cru', role: 'primary', status: 'accepted' },
    { id: 'p1', queue: 'police', role: 'support', status: 'completed' },
  ]
  const p = planAssignments({ ...base, eventType: 'call.closed', existing, decision: decision([{ queue: 'cru', role: 'primary' }], { followUp: true }) })
  t.same(p.cancellations, [{ id: 'c1', from: 'accepted' }])
  t.equal(p.assignments.length, 1)
  t.equal(p.assignments[0]!.queue, 'follow_up')
  t.equal(p.assignments[0]!.dueAt!.toISOString(), '2026-11-26T15:00:00.000Z')
})

t.test('close of a call whose earlier event had the mental-health indicator still gets a follow-up', async (t) => {
  const p = planAssignments({ ...base, mentalHealthCall: true, eventType: 'call.closed', existing: [], decision: decision([{ queue: 'police', role: 'primary' }]) })
  t.equal(p.assignments[0]?.queue, 'follow_up')
  t.match(p.notes[0], /earlier event/)
})

t.test('close of a call without mental-health indicator creates nothing', async (t) => {
  const p = planAssignments({ ...base, eventType: 'call.closed', existing: [], decision: decision([{ queue: 'police', role: 'primary' }]) })
  t.same(p.assignments, [])
})
