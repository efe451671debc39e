/** POST /v1/routing/evaluate: decision, facts and trace for a call, against the active or a named version; no side effects. */
import t from 'tap'
import { addressKey } from '../../src/calls/history.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { candidateV2, storeRuleSet } from './fixtures/store.js'

const world = await createWorld(t)
const { app, db } = world
await storeRuleSet(db, candidateV2())

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const evaluate = (body: object, headers: Record<string, string> = {}) => app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: body, headers })

const counts = async () => {
  const n = async (table: 'calls' | 'call_events' | 'decisions' | 'assignments' | 'outbox' | 'case_links') =>
    Number((await db.selectFrom(table).select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
  return { calls: await n('calls'), events: await n('call_events'), decisions: await n('decisions'), assignments: await n('assignments'), outbox: await n('outbox'), links: await n('case_links') }
}

t.test('decision, facts and trace from the active version; nothing stored, queued or routed', async (t) => {
  const personId = 'P-EVAL-1'
  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-1' } })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP', personId }) })
  const before = await counts()
  const auditBefore = await db.selectFrom('audit_log').select('action').execute()

  const { call } = callEvent({ natureCode: 'EDP', personId })
  const res = await evaluate({ call })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.ruleSetVersion, 1)
  t.equal(body.decision.route, 'case_manager', 'history looked up as ingest would: one prior call and an active link')
  t.same(body.facts.history, { priorCallsForSubject30d: 1, priorCallsAtAddress30d: 1, caseManagerActive: true, caseManager: 'cm-1' }, 'with whom the link names')
  t.match(body.facts, { eventType: 'call.created', agency: 'hastings-pd', natureCode: 'EDP', cru: { available: true } })
  t.equal(body.trace.at(-1).ruleId, 'repeat-caller-case-manager')
  t.equal(body.trace.at(-1).matched, true)
  t.same(body.decision.derived, { natureCode: 'EDP', unknownNatureCode: false, mentalHealthIndicator: true, frequentCaller: false })
  // Twice, to be sure nothing accumulates.
  await evaluate({ call })
  t.same(await counts(), before, 'no call, event, decision, assignment, outbox row or link was written')
  const auditAfter = await db.selectFrom('audit_log').select(['action', 'target_id']).execute()
  t.same(auditAfter.slice(auditBefore.length).map((a) => a.action), ['routing.evaluate', 'routing.evaluate'], 'only the history reads were audited')
  t.notOk(world.logs.join('').includes('Marta Lindqvist'), 'personal data not logged')
})

t.test('a named version, what-if history and CRU, the event type and the instant', async (t) => {
  const { call } = callEvent({ natureCode: 'EDP', personId: 'P-EVAL-2' })
  const v1 = (await evaluate({ call, history: { priorCallsForSubject30d: 1, priorCallsAtAddress30d: 0, caseManagerActive: true } })).json()
  t.equal(v1.decision.route, 'case_manager')
  const v2 = (await evaluate({ call, version: 2, history: { priorCallsForSubject30d: 1, priorCallsAtAddress30d: 0, caseManagerActive: true } })).json()
  t.equal(v2.ruleSetVersion, 2)
  t.equal(v2.decision.route, 'cru', 'v2 wants 3 calls for a case manager')
  const frequent = (await evaluate({ call, version: 2, history: { priorCallsForSubject30d: 2, priorCallsAtAddress30d: 0, caseManagerActive: true } })).json()
  t.equal(frequent.decision.route, 'case_manager')
  t.equal(frequent.decision.derived.frequentCaller, true)

  const closed = (await evaluate({ call, cru: { available: false, reason: 'over capacity' } })).json()
  t.equal(closed.decision.route, 'police')
  t.match(closed.decision.fallback, { fromRoute: 'cru', reason: /over capacity/ })

  // example-city-pd has CRU Mon–Fri 08:00–18:00 America/Chicago: Sunday 03:00 local is outside.
  const night = (await evaluate({ call: { ...call, agency: 'example-city-pd' }, at: '2026-11-22T09:00:00Z' })).json()
  t.equal(night.facts.cru.available, false)
  t.equal(night.decision.route, 'police')
  t.equal((await evaluate({ call, type: 'call.updated' })).json().facts.eventType, 'call.updated')

  t.equal((await evaluate({ call, version: 99 })).statusCode, 404)
  t.equal((await evaluate({ call: { ...call, flags: { weapon: true } } })).statusCode, 400, 'the call shape is validated like ingest')
})

t.test('at a past instant, history counts only the calls before it', async (t) => {
  const personId = 'P-EVAL-PAST'
  const address = '77 Past Instant Rd'
  for (let i = 0; i < 2; i++) await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP', personId, address }) })
  const { call } = callEvent({ natureCode: 'EDP', personId, address })
  const now = (await evaluate({ call })).json()
  t.same(now.facts.history, { priorCallsForSubject30d: 2, priorCallsAtAddress30d: 2, caseManagerActive: false })
  // Ten days ago neither call had been made: a what-if then must not count them.
  const tenDaysAgo = new Date(Date.now() - 10 * 24 * 3600_000).toISOString()
  const then = (await evaluate({ call, at: tenDaysAgo })).json()
  t.same(then.facts.history, { priorCallsForSubject30d: 0, priorCallsAtAddress30d: 0, caseManagerActive: false })
  t.equal(then.facts.at, tenDaysAgo)
})

t.test('permissions: supervisors (within their agencies) and admins', async (t) => {
  const { call } = callEvent({ natureCode: 'NOISE', agency: 'hastings-pd' })
  for (const role of ['cad', 'console', 'auditor'] as const) {
    t.equal((await evaluate({ call }, bearer(await world.key(role)))).statusCode, 403, role)
  }
  t.equal((await evaluate({ call }, { authorization: '' })).statusCode, 401)
  t.equal((await evaluate({ call }, bearer(await world.key('supervisor')))).statusCode, 200)
  const rosemount = await world.key('supervisor', { agencies: ['rosemount-pd'] })
  t.equal((await evaluate({ call }, bearer(rosemount))).statusCode, 403, 'another agency')
  // (No Rosemount call names its subject or is at its address: whose history such a key may look up is the next tests'.)
  const { subject: _subject, location: _location, ...anonymous } = call
  t.equal((await evaluate({ call: { ...anonymous, agency: 'rosemount-pd' } }, bearer(rosemount))).statusCode, 200)
})

t.test('a key limited to some agencies looks up only the history of a person a call of theirs names', async (t) => {
  // Case links are for county-wide keys only (GET /v1/case-links answers a scoped key 403): evaluate
  // must not tell such a key whether anyone at all has a case manager, or how often they called elsewhere.
  const personId = 'P-EVAL-SCOPE'
  t.equal((await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-scope' } })).statusCode, 201)
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP', personId, agency: 'hastings-pd' }) })).statusCode, 201)
  const rosemount = bearer(await world.key('supervisor', { agencies: ['rosemount-pd'] }))
  const { call } = callEvent({ natureCode: 'EDP', personId, agency: 'rosemount-pd' })
  const auditBefore = (await db.selectFrom('audit_log').select('id').execute()).length

  const refused = await evaluate({ call }, rosemount)
  t.equal(refused.statusCode, 403, 'no Rosemount call names the person')
  t.match(refused.json(), { detail: /history/ })
  t.notMatch(refused.body, /cm-scope|caseManagerActive/, 'nothing of the history in the refusal')
  const refusals = (await db.selectFrom('audit_log').select(['action', 'target_id', 'agency']).orderBy('id').execute()).slice(auditBefore)
  t.same(refusals, [{ action: 'routing.evaluate.refused', target_id: personId, agency: 'rosemount-pd' }], 'nothing was read; the refused lookup is audited (a key trying person ids)')

  // Without the person, its address, where no Rosemount call is either (the next test's); with
  // neither, or with the history given: answered.
  const { subject: _subject, ...anonymous } = call
  t.equal((await evaluate({ call: anonymous }, rosemount)).statusCode, 403)
  const { location: _location, ...nowhere } = anonymous
  t.equal((await evaluate({ call: nowhere }, rosemount)).statusCode, 200)
  const given = await evaluate({ call, history: { priorCallsForSubject30d: 0, priorCallsAtAddress30d: 0, caseManagerActive: false } }, rosemount)
  t.equal(given.statusCode, 200)
  t.equal(given.json().facts.history.caseManagerActive, false, 'the given history, not the stored one')

  // Once a Rosemount call names the person, Rosemount's supervisors see that call's facts anyway.
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE', personId, agency: 'rosemount-pd' }) })).statusCode, 201)
  const looked = await evaluate({ call }, rosemount)
  t.equal(looked.statusCode, 200)
  t.match(looked.json().facts.history, { priorCallsForSubject30d: 2, caseManagerActive: true })

  // A county-wide supervisor looks up anyone.
  const other = callEvent({ natureCode: 'EDP', personId: 'P-EVAL-NOWHERE', agency: 'rosemount-pd' }).call
  t.equal((await evaluate({ call: other }, bearer(await world.key('supervisor')))).statusCode, 200)
  t.equal((await evaluate({ call: other }, rosemount)).statusCode, 403)
})

t.test('a key limited to some agencies looks up only the history of an address a call of theirs is at', async (t) => {
  // How often 911 was called from a home is Hastings' data, as much as a person's calls are.
  const address = '9 Probe Lane'
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE', agency: 'hastings-pd', address }) })).statusCode, 201)
  const rosemount = bearer(await world.key('supervisor', { agencies: ['rosemount-pd'] }))
  const { subject: _subject, ...call } = callEvent({ natureCode: 'NOISE', agency: 'rosemount-pd', address }).call
  const auditBefore = (await db.selectFrom('audit_log').select('id').execute()).length

  const refused = await evaluate({ call }, rosemount)
  t.equal(refused.statusCode, 403, 'no Rosemount call is at the address')
  t.match(refused.json(), { detail: /address/ })
  t.notMatch(refused.body, /priorCalls/, 'nothing of the history in the refusal')
  const key = addressKey(call.location)!
  const refusals = (await db.selectFrom('audit_log').select(['action', 'target_type', 'target_id', 'agency']).orderBy('id').execute()).slice(auditBefore)
  t.same(refusals, [{ action: 'routing.evaluate.refused', target_type: 'address', target_id: null, agency: 'rosemount-pd' }], 'the refused lookup is audited')
  t.equal((await evaluate({ call, at: new Date(Date.now() - 86_400_000).toISOString() }, rosemount)).statusCode, 403, 'at any instant')

  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE', agency: 'rosemount-pd', address }) })).statusCode, 201)
  const looked = await evaluate({ call }, rosemount)
  t.equal(looked.statusCode, 200, 'once a Rosemount call is there')
  t.equal(looked.json().facts.history.priorCallsAtAddress30d, 4)
  const [read] = (await db.selectFrom('audit_log').select(['action', 'details']).where('action', '=', 'routing.evaluate').orderBy('id', 'desc').limit(1).execute())
  t.match(read?.details, { addressLookedUp: true }, 'the read says an address was looked up')
  // Not which: the key is an unsalted hash of the address, and the audit log is never scrubbed.
  const audited = JSON.stringify(await db.selectFrom('audit_log').selectAll().execute())
  t.notOk(audited.includes(key), 'no address key anywhere in the audit log')
  t.equal((await evaluate({ call }, bearer(await world.key('supervisor')))).statusCode, 200, 'a county-wide key looks up any address')
})
