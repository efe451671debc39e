/**
 * DESIGN rule 7 "over capacity" end to end: with a CRU team's limit of open CRU assignments
 * reached, the next mental-health call falls back to police and the decision says why; the call's
 * own assignments never count against it, and a finished assignment frees a place.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

const world = await createWorld(t)
const { app, db } = world

// The default document's type knows only its own cru entries; this one has others.
const doc = defaultDocument() as Omit<ReturnType<typeof defaultDocument>, 'cru'> & { cru: Record<string, unknown> }
doc.version = 2
doc.cru = { '*': { schedule: 'always', maxOpenAssignments: 1 }, 'hastings-pd': { schedule: 'always', maxOpenAssignments: 2 } }

const crisis = (i: Parameters<typeof callEvent>[0] = {}) => callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, ...i })
const route = async (event: ReturnType<typeof callEvent>) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: event })
  if (res.statusCode >= 300) throw new Error(res.body)
  return res.json().decision as { route: string; ruleSetVersion: number; fallback: { fromRoute: string; reason: string } | null; explanation: string }
}

t.before(async () => {
  const stored = await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })
  if (stored.statusCode !== 201) throw new Error(stored.body)
  const activated = await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'CRU capacity limits' } })
  if (activated.statusCode !== 200) throw new Error(activated.body)
})

t.test('Hastings: two open CRU calls fill the team; the third goes to police, saying why', async (t) => {
  const first = crisis({ agency: 'hastings-pd' })
  t.equal((await route(first)).route, 'cru')
  t.equal((await route(crisis({ agency: 'hastings-pd' }))).route, 'cru')
  const third = await route(crisis({ agency: 'hastings-pd' }))
  t.equal(third.route, 'police')
  t.same(third.fallback, { fromRoute: 'cru', reason: 'CRU is not available (CRU at capacity for hastings-pd (2 open CRU assignments, limit 2)), so the call goes to police' })
  t.match(third.explanation, /Principle 7 \(CRU fallback\)/)

  // An update of a call that holds a place is not refused by its own assignment.
  const update = await route({ ...first, eventId: `${first.eventId}-u`, type: 'call.updated', occurredAt: new Date(Date.parse(first.occurredAt) + 1000).toISOString() })
  t.equal(update.route, 'cru', 'its own CRU assignment does not count against it')

  // Another agency's CRU calls count against their own team, not Hastings'.
  t.equal((await route(crisis({ agency: 'rosemount-pd' }))).route, 'cru', 'the county line has its own place')
  const county = await route(crisis({ agency: 'apple-valley-pd' }))
  t.equal(county.route, 'police', 'the county line (limit 1) is shared by every agency without a team of its own')
  t.match(county.fallback?.reason, /CRU at capacity for the county CRU line \(1 open CRU assignments, limit 1\)/)

  // A finished assignment frees a place.
  await db
    .updateTable('assignments')
    .set({ status: 'completed' })
    .where('call_id', '=', first.call.callId)
    .where('queue', '=', 'cru')
    .execute()
  t.equal((await route(crisis({ agency: 'hastings-pd' }))).route, 'cru')
})

t.test('the facts stored with the decision carry the capacity reason', async (t) => {
  const rows = await db.selectFrom('decisions').select(['facts', 'rule_set_version']).execute()
  t.ok(rows.every((r) => r.rule_set_version === 2))
  t.ok(rows.some((r) => /CRU at capacity for hastings-pd/.test(JSON.stringify((r.facts as { cru: unknown }).cru))))
})

t.test('evaluate sees the same capacity as ingest (unless given the CRU facts)', async (t) => {
  const call = crisis({ agency: 'apple-valley-pd' }).call
  // The county line's one place is still taken by the Apple Valley call above.
  const evaluated = await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call } })
  t.equal(evaluated.statusCode, 200)
  t.equal(evaluated.json().decision.route, 'police')
  t.match(evaluated.json().facts.cru.reason, /CRU at capacity for the county CRU line/)
  const given = await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: { call, cru: { available: true, reason: null } } })
  t.equal(given.json().decision.route, 'cru', 'given CRU facts are used as they are')
})
