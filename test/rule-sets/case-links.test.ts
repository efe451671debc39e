/** PUT/GET/DELETE /v1/case-links/{personId}: DESIGN rule 6 follows the links, who may change them, audit, privacy. */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const post = async (ev: ReturnType<typeof callEvent>) => (await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })).json<{ decision: { route: string; ruleId: string } }>().decision

t.test('a link makes a repeat caller go to the case manager (rule 6); removing it sends them back to CRU', async (t) => {
  const personId = 'P-CL-001'
  const first = await post(callEvent({ natureCode: 'EDP', personId }))
  t.equal(first.route, 'cru', 'a first call, no link: CRU')
  const noLink = await post(callEvent({ natureCode: 'EDP', personId }))
  t.equal(noLink.route, 'cru', 'a repeat call without a link: CRU')

  const put = await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-17' } })
  t.equal(put.statusCode, 201)
  t.match(put.json(), { personId, caseManager: 'cm-17', active: true })
  const linked = await post(callEvent({ natureCode: 'EDP', personId }))
  t.equal(linked.route, 'case_manager')
  t.equal(linked.ruleId, 'repeat-caller-case-manager')
  // Rule 1 still wins over the case manager.
  t.equal((await post(callEvent({ natureCode: 'EDP', personId, flags: { weapons: true } }))).route, 'co_response')

  const inactive = await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-17', active: false } })
  t.equal(inactive.statusCode, 200, 'replacing answers 200')
  t.equal((await post(callEvent({ natureCode: 'EDP', personId }))).route, 'cru', 'an inactive link does not route')

  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-22' } })
  t.equal((await app.inject({ method: 'GET', url: `/v1/case-links/${personId}` })).json().caseManager, 'cm-22')
  const del = await app.inject({ method: 'DELETE', url: `/v1/case-links/${personId}` })
  t.equal(del.statusCode, 204)
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/case-links/${personId}` })).statusCode, 404, 'deleting twice: 404')
  t.equal((await app.inject({ method: 'GET', url: `/v1/case-links/${personId}` })).statusCode, 404)
  t.equal((await db.selectFrom('case_links').selectAll().where('person_id', '=', personId).execute()).length, 0, 'the row is gone')
  t.equal((await post(callEvent({ natureCode: 'EDP', personId }))).route, 'cru')
})

t.test('only county-wide supervisor and admin keys may read or change links', async (t) => {
  const url = '/v1/case-links/P-CL-002'
  const payload = { caseManager: 'cm-3' }
  for (const role of ['cad', 'console', 'auditor'] as const) {
    const key = await world.key(role)
    t.equal((await app.inject({ method: 'PUT', url, payload, headers: bearer(key) })).statusCode, 403, `${role} may not put`)
    t.equal((await app.inject({ method: 'GET', url, headers: bearer(key) })).statusCode, 403, `${role} may not read`)
    t.equal((await app.inject({ method: 'DELETE', url, headers: bearer(key) })).statusCode, 403, `${role} may not delete`)
  }
  const city = await world.key('supervisor', { agencies: ['hastings-pd'] })
  t.equal((await app.inject({ method: 'PUT', url, payload, headers: bearer(city) })).statusCode, 403, 'a city-scoped supervisor may not')
  t.equal((await app.inject({ method: 'PUT', url, payload, headers: { authorization: '' } })).statusCode, 401)
  const county = await world.key('supervisor')
  t.equal((await app.inject({ method: 'PUT', url, payload, headers: bearer(county) })).statusCode, 201, 'a county-wide supervisor may')
  t.equal((await app.inject({ method: 'GET', url, headers: bearer(county) })).statusCode, 200)
  t.equal((await app.inject({ method: 'DELETE', url, headers: bearer(county) })).statusCode, 204)
  t.equal((await db.selectFrom('case_links').selectAll().execute()).length, 0, 'refused requests changed nothing')
  const bad = await app.inject({ method: 'PUT', url, payload: { caseManager: '', extra: 1 }, headers: bearer(county) })
  t.equal(bad.statusCode, 400)
})

t.test('changes and reads are audited; the person id never reaches a log line', async (t) => {
  const personId = 'P-SECRET-77'
  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-9' } })
  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-9', active: false } })
  await app.inject({ method: 'GET', url: `/v1/case-links/${personId}` })
  await app.inject({ method: 'DELETE', url: `/v1/case-links/${personId}` })
  const rows = await db.selectFrom('audit_log').select(['action', 'target_id', 'actor']).where('target_id', '=', personId).orderBy('id').execute()
  t.same(rows.map((r) => r.action), ['case-link.create', 'case-link.update', 'case-link.read', 'case-link.delete'])
  t.ok(rows.every((r) => r.actor === 'test-admin'), 'who did it')
  t.notOk(world.logs.join('').includes(personId), 'no log line carries the person id')
  t.ok(world.logs.join('').includes('/v1/case-links/[redacted]'), 'the path is logged redacted')

  // Reading the audit trail of that person names them in the query string.
  const before = world.logs.length
  for (const query of [`targetType=person&targetId=${personId}`, `targetId=${personId}&limit=5`, `target%49d=${personId}`]) {
    const res = await app.inject({ method: 'GET', url: `/v1/audit?${query}` })
    t.equal(res.statusCode, 200, query)
    t.equal(res.json().items.length, 4, 'the audit read found the person')
  }
  const lines = world.logs.slice(before).join('')
  t.notOk(lines.includes(personId), 'no log line of an audit read carries the person id')
  t.ok(lines.includes('/v1/audit?targetType=person&targetId=[redacted]'), 'the rest of the query is logged')
  t.ok(lines.includes('target%49d=[redacted]'), 'a name written with an escape is redacted too')
})

t.test('evaluate names the case manager it looked up, or the one a what-if gives, on the planned case-management assignment', async (t) => {
  const personId = 'P-CL-EVAL'
  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-31' } })
  await post(callEvent({ natureCode: 'EDP', personId }))
  const evaluate = async (body: object) => (await app.inject({ method: 'POST', url: '/v1/routing/evaluate', payload: body })).json()
  const looked = await evaluate({ call: callEvent({ natureCode: 'EDP', personId }).call })
  t.equal(looked.decision.route, 'case_manager')
  t.match(looked.facts.history, { caseManagerActive: true, caseManager: 'cm-31' })
  t.same(looked.decision.assignments, [
    { queue: 'case_management', role: 'primary', caseManager: 'cm-31' },
    { queue: 'cru', role: 'support', caseManager: null },
  ])
  const whatIf = await evaluate({ call: callEvent({ natureCode: 'EDP' }).call, history: { priorCallsForSubject30d: 2, priorCallsAtAddress30d: 0, caseManagerActive: true, caseManager: 'cm-what-if' } })
  t.equal(whatIf.decision.assignments[0].caseManager, 'cm-what-if')
  const contradiction = await app.inject({
    method: 'POST',
    url: '/v1/routing/evaluate',
    payload: { call: callEvent({ natureCode: 'EDP' }).call, history: { priorCallsForSubject30d: 2, priorCallsAtAddress30d: 0, caseManagerActive: false, caseManager: 'cm-x' } },
  })
  t.equal(contradiction.statusCode, 400, 'a case manager without an active link is refused')
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/case-links/${personId}` })).statusCode, 204)
})
