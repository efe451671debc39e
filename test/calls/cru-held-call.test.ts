/**
 * DESIGN rule 7 is about CRU taking on a new call: once CRU's hours end, an update to a call CRU
 * already holds (an open CRU assignment) must not hand it to police — unless rule 1 says so.
 * example-city-pd has CRU Mon–Fri 08:00–18:00 America/Chicago in the default rule set.
 */
import t, { type Test } from 'tap'
import { factsSchema } from '../../src/rule-sets/facts.js'
import type { RoutingFacts } from '../../src/routing/index.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const IN_HOURS = '2026-11-23T23:55:00Z' // Mon 17:55 in Chicago
const AFTER_HOURS = '2026-11-24T00:05:00Z' // Mon 18:05

let clock = new Date(IN_HOURS)
const world = await createWorld(t, { now: () => clock })
const { app, db } = world

interface Decision {
  id: string
  route: string
  ruleId: string
  explanation: string
  assignments: { id: string; queue: string; role: string; status: string }[]
  fallback: { fromRoute: string; reason: string } | null
}

const post = async (ev: unknown) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev as object })
  if (res.statusCode !== 201) throw new Error(`call event: ${res.statusCode} ${res.body}`)
  return res.json<{ decision: Decision }>().decision
}
const move = async (id: string, action: string) => {
  const res = await app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}` })
  if (res.statusCode !== 200) throw new Error(`${action}: ${res.statusCode} ${res.body}`)
}
const summary = (d: Decision) => d.assignments.map((a) => `${a.queue}/${a.role}/${a.status}`)

/** An EDP call for example-city-pd at 17:55, routed to CRU alone; its CRU assignment's id. */
async function cruCallBeforeClosing(): Promise<{ callId: string; cruId: string }> {
  clock = new Date(IN_HOURS)
  const ev = callEvent({ natureCode: 'EDP', agency: 'example-city-pd', occurredAt: IN_HOURS })
  const d = await post(ev)
  if (d.route !== 'cru' || d.assignments.length !== 1) throw new Error(`expected CRU alone at 17:55, got ${d.route} ${summary(d)}`)
  return { callId: ev.call.callId, cruId: d.assignments[0]!.id }
}

const update = (callId: string, flags: Record<string, boolean> = {}) => {
  clock = new Date(AFTER_HOURS)
  return post(callEvent({ type: 'call.updated', callId, natureCode: 'EDP', agency: 'example-city-pd', priority: 3, flags, occurredAt: AFTER_HOURS }))
}

const assignmentsOf = (callId: string) => db.selectFrom('assignments').select(['id', 'queue', 'role', 'status']).where('call_id', '=', callId).orderBy('seq').execute()

/** The stored decision decides the same again from its stored facts, as replay does (also after the replay file's schema). */
async function replays(t: Test, decisionId: string, posted: Decision): Promise<RoutingFacts> {
  const row = await db.selectFrom('decisions').select(['facts', 'rule_set_version', 'outcome']).where('id', '=', decisionId).executeTakeFirstOrThrow()
  const facts = row.facts as RoutingFacts
  const ruleSet = (await world.ruleSets.version(row.rule_set_version))!
  t.same(factsSchema.parse(facts).cru, facts.cru, 'the replay schema keeps every CRU fact, the waived reason included')
  for (const [how, f] of [['stored facts', facts], ['facts through the replay schema', factsSchema.parse(facts) as RoutingFacts]] as const) {
    const again = ruleSet.decide(f)
    t.equal(again.route, posted.route, `${how}: same route`)
    t.equal(again.ruleId, posted.ruleId, `${how}: same rule`)
    t.same(again.fallback, posted.fallback, `${how}: same fallback`)
    t.same(again.trace, (row.outcome as { trace: unknown }).trace, `${how}: same trace`)
  }
  return facts
}

t.test('an accepted CRU call stays with CRU when a routine update comes after hours', async (t) => {
  const { callId, cruId } = await cruCallBeforeClosing()
  await move(cruId, 'accept')

  const d = await update(callId)
  t.equal(d.route, 'cru')
  t.equal(d.fallback, null, 'no CRU fallback: CRU already holds the call')
  t.same(summary(d), ['cru/primary/accepted'])
  t.equal(d.assignments[0]!.id, cruId, 'the same CRU assignment, still primary')
  t.match(d.explanation, /CRU already holds this call.*outside CRU hours for example-city-pd/)
  t.same(
    (await assignmentsOf(callId)).map((a) => `${a.queue}/${a.role}/${a.status}`),
    ['cru/primary/accepted'],
    'no police assignment was created',
  )

  const facts = await replays(t, d.id, d)
  t.equal(facts.cru.available, true, 'the facts record CRU as available for this call')
  t.match(facts.cru.unavailableForNewCalls, /outside CRU hours for example-city-pd/, '…and why a new call would not get CRU')
})

t.test('a CRU call not yet acknowledged stays with CRU after hours too', async (t) => {
  const { callId, cruId } = await cruCallBeforeClosing()
  const d = await update(callId)
  t.equal(d.route, 'cru')
  t.same(summary(d), ['cru/primary/queued'])
  t.equal(d.assignments[0]!.id, cruId)
})

t.test('safety still wins: an update adding weapons makes police primary, CRU beside them', async (t) => {
  const { callId, cruId } = await cruCallBeforeClosing()
  await move(cruId, 'accept')

  const d = await update(callId, { weapons: true })
  t.equal(d.route, 'co_response', 'a co-response: CRU is available for the call it holds')
  t.equal(d.ruleId, 'safety-mental-health-co-response')
  t.same(summary(d).sort(), ['cru/support/accepted', 'police/primary/queued'])
  t.equal(d.assignments.find((a) => a.queue === 'cru')!.id, cruId, 'the CRU assignment stays, as support')
  await replays(t, d.id, d)
})

t.test('a call whose CRU assignment was declined falls back to police after hours, as before', async (t) => {
  const { callId, cruId } = await cruCallBeforeClosing()
  clock = new Date(AFTER_HOURS)
  await move(cruId, 'decline')
  t.notOk((await assignmentsOf(callId)).some((a) => a.queue === 'cru' && a.status !== 'declined'), 'no open CRU assignment left')

  const d = await update(callId)
  t.equal(d.route, 'police')
  t.match(d.fallback, { fromRoute: 'cru', reason: /outside CRU hours for example-city-pd/ })
  t.notOk(d.assignments.some((a) => a.queue === 'cru'), 'no CRU assignment in the decision')
  t.same(summary(d).filter((s) => s.startsWith('police/primary')).length, 1, 'police primary')
  const facts = await replays(t, d.id, d)
  t.equal(facts.cru.available, false, 'CRU unavailable')
  t.notOk('unavailableForNewCalls' in facts.cru, 'nothing waived')
})

t.test('a new call after hours falls back to police, as before', async (t) => {
  clock = new Date(AFTER_HOURS)
  const d = await post(callEvent({ natureCode: 'EDP', agency: 'example-city-pd', occurredAt: AFTER_HOURS }))
  t.equal(d.route, 'police')
  t.match(d.fallback, { fromRoute: 'cru', reason: /outside CRU hours for example-city-pd/ })
  t.same(summary(d), ['police/primary/queued'])
})

t.test('escalation counts as ingest does: a case manager declining after hours hands the call to the CRU support already on it, not to police', async (t) => {
  clock = new Date(IN_HOURS)
  const ev = callEvent({ natureCode: 'EDP', agency: 'example-city-pd', occurredAt: IN_HOURS, dispatcherOverride: 'case_manager' })
  const d = await post(ev)
  t.same(summary(d).sort(), ['case_management/primary/queued', 'cru/support/queued'], 'a case manager leads, CRU beside them')
  const cm = d.assignments.find((a) => a.queue === 'case_management')!
  const cru = d.assignments.find((a) => a.queue === 'cru')!

  clock = new Date(AFTER_HOURS)
  await move(cm.id, 'decline')
  t.same(
    (await assignmentsOf(ev.call.callId)).map((a) => `${a.queue}/${a.role}/${a.status}`).sort(),
    ['case_management/primary/declined', 'cru/primary/queued'],
    'CRU, which holds the call, becomes primary; no police for a call without safety facts',
  )
  const [moved] = await db.selectFrom('assignment_transitions').select('reason').where('assignment_id', '=', cm.id).where('to_status', '=', 'declined').execute()
  t.match(moved?.reason, /escalated to cru/)
  t.notMatch(moved?.reason, /not available/)
  t.equal((await assignmentsOf(ev.call.callId)).find((a) => a.queue === 'cru')!.id, cru.id, 'the same CRU assignment')
})
