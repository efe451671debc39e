/** Shadow mode: a candidate version decides every live call beside the active one; the differences and their report. */
import t from 'tap'
import { createShadowSource } from '../../src/rule-sets/shadow.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { candidateV2, storeRuleSet } from './fixtures/store.js'

const world = await createWorld(t)
const { app, db } = world
await storeRuleSet(db, candidateV2())

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const post = async (ev: ReturnType<typeof callEvent>) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })
  t.equal(res.statusCode, 201)
  return res.json<{ decision: { id: string; route: string; ruleSetVersion: number } }>().decision
}
const shadowRows = () => db.selectFrom('shadow_decisions').selectAll().orderBy('id').execute()

t.test('no shadow set: ingest writes no shadow row', async (t) => {
  await post(callEvent({ natureCode: 'EDP' }))
  t.equal((await shadowRows()).length, 0)
  t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow' })).statusCode, 404)
})

t.test('with version 2 in shadow, every live decision is also decided by it; live answers do not change', async (t) => {
  const put = await app.inject({ method: 'PUT', url: '/v1/rule-sets/2/shadow', payload: { reason: 'trial of frequent-caller threshold' } })
  t.equal(put.statusCode, 200)
  t.match(put.json(), { version: 2, name: 'dakota-county-candidate', setBy: 'test-admin', reason: 'trial of frequent-caller threshold' })
  t.match((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow' })).json(), { version: 2 })

  const personId = 'P-SHADOW-1'
  await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-5' } })
  const a = await post(callEvent({ natureCode: 'EDP', personId })) // v1 cru, v2 cru
  const b = await post(callEvent({ natureCode: 'EDP', personId })) // v1 case_manager, v2 cru (2 calls)
  const c = await post(callEvent({ natureCode: 'EDP', personId })) // both case_manager (3 calls)
  const d = await post(callEvent({ natureCode: 'TRESPASS', flags: { mentalHealth: true } })) // v1 co_response, v2 cru
  const e = await post(callEvent({ natureCode: 'NOISE' })) // both police
  t.same([a, b, c, d, e].map((x) => x.route), ['cru', 'case_manager', 'case_manager', 'co_response', 'police'], 'live routes are version 1’s')
  t.ok([a, b, c, d, e].every((x) => x.ruleSetVersion === 1))
  // A close is shadowed too (one row per live decision) but does not count in the report.
  const closeOf = callEvent({ natureCode: 'NOISE' })
  await post(closeOf)
  await post(callEvent({ ...closeOf, eventId: undefined, callId: closeOf.call.callId, type: 'call.closed', occurredAt: '2026-11-23T18:00:00Z', disposition: 'resolved_by_phone' }))

  const rows = await shadowRows()
  t.equal(rows.length, 7, 'one row per live decision')
  t.same(rows.slice(0, 5).map((r) => r.decision_id), [a, b, c, d, e].map((x) => x.id))
  t.same(rows.slice(0, 5).map((r) => [r.live_route, r.shadow_route, r.changed]), [
    ['cru', 'cru', false],
    ['case_manager', 'cru', true],
    ['case_manager', 'case_manager', false],
    ['co_response', 'cru', true],
    ['police', 'police', false],
  ])
  t.match(rows[1], { live_version: 1, shadow_version: 2, nature_code: 'EDP', live_rule_id: 'repeat-caller-case-manager', shadow_rule_id: 'mental-health-cru', mental_health: true })
  t.same(rows[1]!.shadow_assignments, [{ queue: 'cru', role: 'primary' }])
  const liveAssignments = await db.selectFrom('assignments').select('queue').where('decision_id', '=', b.id).execute()
  t.same(liveAssignments.map((x) => x.queue), ['case_management', 'cru'], 'the shadow queued nothing')

  const report = await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z' })
  t.equal(report.statusCode, 200)
  t.same(report.json(), {
    shadowVersion: 2,
    from: '2026-01-01T00:00:00.000Z',
    to: '2027-01-01T00:00:00.000Z',
    decisions: 6,
    calls: 6,
    changed: 2,
    changedCalls: 2,
    liveRouteMix: { police: 2, cru: 1, co_response: 1, ems: 0, case_manager: 2 },
    shadowRouteMix: { police: 2, cru: 3, co_response: 0, ems: 0, case_manager: 1 },
    byNatureCode: [
      { natureCode: 'EDP', decisions: 3, changed: 1, moves: [{ from: 'case_manager', to: 'cru', count: 1 }] },
      { natureCode: 'TRESPASS', decisions: 1, changed: 1, moves: [{ from: 'co_response', to: 'cru', count: 1 }] },
    ],
  })
  const rosemount = await world.key('supervisor', { agencies: ['rosemount-pd'] })
  const scoped = (await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z', headers: bearer(rosemount) })).json()
  t.equal(scoped.decisions, 0, 'another agency’s key sees none of it')
  const outside = await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report?agency=hastings-pd&from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z', headers: bearer(rosemount) })
  t.equal(outside.statusCode, 403, 'asking for an agency outside its scope is refused, as the summary report does')
})

t.test('other instances follow the setting; clearing stops shadowing', async (t) => {
  const other = await createShadowSource(db, world.ruleSets, { refreshMs: 0 })
  t.equal(other.current()?.version, 2, 'read at start')
  const del = await app.inject({ method: 'DELETE', url: '/v1/rule-sets/2/shadow' })
  t.equal(del.statusCode, 204)
  await other.refresh()
  t.equal(other.current(), null, 'picked up by another instance')
  const before = (await shadowRows()).length
  await post(callEvent({ natureCode: 'EDP' }))
  t.equal((await shadowRows()).length, before, 'no shadow row once cleared')
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/rule-sets/2/shadow' })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report?version=2&from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z' })).json().decisions, 6, 'the stored differences stay')
  const audits = await db.selectFrom('audit_log').select(['action', 'target_id']).where('action', 'like', 'rule-set.shadow.%').orderBy('id').execute()
  t.same(audits, [{ action: 'rule-set.shadow.set', target_id: '2' }, { action: 'rule-set.shadow.clear', target_id: '2' }])
})

t.test('refusals and permissions', async (t) => {
  t.equal((await app.inject({ method: 'PUT', url: '/v1/rule-sets/1/shadow' })).statusCode, 400, 'the active version cannot shadow itself')
  t.equal((await app.inject({ method: 'PUT', url: '/v1/rule-sets/42/shadow' })).statusCode, 404)
  for (const role of ['cad', 'console', 'auditor'] as const) {
    const key = await world.key(role)
    t.equal((await app.inject({ method: 'PUT', url: '/v1/rule-sets/2/shadow', headers: bearer(key) })).statusCode, 403, `${role} may not set`)
    t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow/report', headers: bearer(key) })).statusCode, 403, `${role} may not read the report`)
  }
  const supervisor = await world.key('supervisor')
  const citySupervisor = await world.key('supervisor', { agencies: ['hastings-pd'] })
  const cityPut = await app.inject({ method: 'PUT', url: '/v1/rule-sets/2/shadow', headers: bearer(citySupervisor) })
  t.equal(cityPut.statusCode, 403, "an agency's supervisor may not shadow every agency's calls")
  t.match(cityPut.json().detail, /county-wide/)
  t.equal((await app.inject({ method: 'PUT', url: '/v1/rule-sets/2/shadow', headers: bearer(supervisor) })).statusCode, 200)
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/rule-sets/2/shadow', headers: bearer(citySupervisor) })).statusCode, 403, 'nor end it')
  t.match((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow', headers: bearer(supervisor) })).json(), { version: 2, setBy: String }, 'still on')
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/rule-sets/2/shadow', headers: bearer(supervisor) })).statusCode, 204)
})

t.test('activating the version in shadow ends shadowing: it does not start again beside a later active version', async (t) => {
  t.equal((await app.inject({ method: 'PUT', url: '/v1/rule-sets/2/shadow', payload: { reason: 'last trial' } })).statusCode, 200)
  const activated = await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'trial went well' } })
  t.equal(activated.statusCode, 200, activated.body)
  t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow' })).statusCode, 404, 'no shadow once it is live')
  const ended = await db.selectFrom('audit_log').select(['action', 'target_type', 'target_id', 'details']).where('action', '=', 'rule-set.shadow.clear').orderBy('id', 'desc').executeTakeFirstOrThrow()
  t.match(ended, { target_type: 'rule_set', target_id: '2', details: { reason: 'version 2 activated' } }, 'audited with the activation')

  const back = await app.inject({ method: 'POST', url: '/v1/rule-sets/rollback', payload: { reason: 'back to 1' } })
  t.equal(back.statusCode, 200, back.body)
  const other = await createShadowSource(db, world.ruleSets, { refreshMs: 0 })
  t.equal(other.current(), null, 'version 2 does not resume shadowing beside version 1')
  const before = (await shadowRows()).length
  const d = await post(callEvent({ natureCode: 'EDP' }))
  t.equal(d.ruleSetVersion, 1)
  t.equal((await shadowRows()).length, before, 'and writes no shadow rows')
})

t.test('the version another instance has just activated cannot be put in shadow before this one hears of it', async (t) => {
  await storeRuleSet(db, { ...candidateV2(), version: 3 })
  // Another instance's activation, committed; its NOTIFY not yet heard here (this instance still routes with 1).
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('rule_sets').set({ status: 'retired' }).where('status', '=', 'active').execute()
    await trx.updateTable('rule_sets').set({ status: 'active', activated_at: new Date() }).where('version', '=', 3).execute()
  })
  // (This instance has not switched yet, unless its 5 s check ran just now: the refusal holds either way.)
  const put = await app.inject({ method: 'PUT', url: '/v1/rule-sets/3/shadow', payload: { reason: 'too late' } })
  t.equal(put.statusCode, 400, put.body)
  t.match(put.json(), { invalidParams: [{ name: 'params.version', reason: 'is the active version' }] })
  t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets/shadow' })).statusCode, 404, 'no shadow of the live version, to resume stale beside the next')
})
