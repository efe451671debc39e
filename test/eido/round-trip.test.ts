import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { eidoInSchema, eidoOutSchema, type EidoOut } from '../../src/eido/schemas.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { eidoFixture, TWINS } from './fixtures/index.js'

const world = await createWorld(t)
const { app } = world

interface Result {
  eventId: string
  callId: string
  applied: boolean
  decision: { id: string; route: string; ruleId: string; fallback: unknown; review: string[]; assignments: { id: string; queue: string; role: string; status: string }[] }
}

const postEido = (doc: unknown) => app.inject({ method: 'POST', url: '/v1/eido', payload: doc as object })
const postNative = (ev: unknown) => app.inject({ method: 'POST', url: '/v1/call-events', payload: ev as object })
const getEido = async (callId: string): Promise<EidoOut> => {
  const res = await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}/eido` })
  if (res.statusCode !== 200) throw new Error(`GET eido answered ${res.statusCode}: ${res.body}`)
  return res.json<EidoOut>()
}
const roles = (r: Result) => r.decision.assignments.map((a) => `${a.queue}:${a.role}`).sort()
const sameDecision = (t: Test, eido: Result, twin: Result, what: string) => {
  t.equal(eido.decision.route, twin.decision.route, `${what}: same route`)
  t.same(roles(eido), roles(twin), `${what}: same assignments`)
  t.equal(eido.decision.ruleId, twin.decision.ruleId, `${what}: same rule`)
  t.same(eido.decision.review, twin.decision.review, `${what}: same review marks`)
}
const resources = (doc: EidoOut) =>
  doc.emergencyResourceComponent.map((r) => `${r.emergencyResourceTypeCommonRegistryText}/${r.resourceAttributeRegistryText.join(',')}/${r.primaryUnitStatusRegistryText}`).sort()

t.test('each fixture routes as its native twin, comes out valid, and goes back in to the same route', async (t) => {
  for (const [name, twin] of Object.entries(TWINS)) {
    const doc = eidoFixture(name)
    const res = await postEido(doc)
    t.equal(res.statusCode, 201, `${name}: ${res.body.slice(0, 300)}`)
    const viaEido = res.json<Result>()
    t.equal(viaEido.callId, doc.$id)
    t.equal(viaEido.decision.route, twin.route, `${name}: the route the twin is written for`)

    const twinRes = await postNative({ eventId: `twin-${randomUUID()}`, type: 'call.created', occurredAt: doc.lastUpdateTimeStamp, call: { ...twin.call, callId: `twin-${randomUUID()}` } })
    t.equal(twinRes.statusCode, 201, `${name} twin`)
    sameDecision(t, viaEido, twinRes.json<Result>(), name)

    const out = await getEido(doc.$id)
    const valid = eidoOutSchema.safeParse(out)
    t.ok(valid.success, `${name}: the output validates against the EIDO parts it uses`)
    t.equal(out.incidentComponent.incidentTypeCommonRegistryText, twin.call.natureCode)
    t.same(out.incidentComponent.incidentStatusCommonRegistryText, ['Active'])
    t.equal(out.emergencyResourceComponent.length, viaEido.decision.assignments.length, `${name}: one emergency resource per assignment`)
    t.ok(out.emergencyResourceComponent.every((r) => r.primaryUnitStatusRegistryText === 'Assigned'))
    // Every reference in the output resolves to a component of the output.
    const ids = new Set(JSON.stringify(out).match(/"\$id":"[^"]*"/g)!.map((m) => m.slice(7, -1)))
    const refs = JSON.stringify(out).match(/"\$ref":"[^"]*"/g)!.map((m) => m.slice(8, -1))
    t.same(refs.filter((r) => !ids.has(r)), [], `${name}: no dangling $ref`)

    // Out and back in: the same native call (but for its id), hence the same route.
    const again = eidoInSchema.parse({ ...out, $id: `${doc.$id}-again` })
    const mapped = eidoToCallEvent(again)
    t.same({ ...mapped.call, callId: twin.call.callId }, twin.call, `${name}: EIDO out maps back onto the same call`)
    const back = await postEido({ ...out, $id: `${doc.$id}-again` })
    t.equal(back.statusCode, 201)
    sameDecision(t, back.json<Result>(), viaEido, `${name} round trip`)
  }
})

t.test('the pools come out as emergency resources with their registry values', async (t) => {
  const cru = await getEido(TWINS['mental-health-crisis']!.call.callId)
  t.same(resources(cru), ['CrisisInterventionUnit/CrisisInterventionSpecialist/Assigned'])
  const co = await getEido(TWINS['weapons-patient']!.call.callId)
  t.same(resources(co), ['CrisisInterventionUnit/CrisisInterventionSpecialist/Assigned', 'LawEnforcementUnit/LawEnforcementOfficer/Assigned'])
  t.ok(co.cautionComponent?.some((c) => c.cautionTypeCommonRegistryText === 'Weapons' && c.cautionSeverity === 'high'))
  const ems = await getEido(TWINS['overdose-additional-data']!.call.callId)
  t.same(resources(ems), ['EmsUnit/Paramedic/Assigned'])
  const decision = ems.additionalDataComponent.find((a) => a.urlPurpose === 'urn:cad-router:decision')
  t.equal(JSON.parse(decision!.additionalDataByValue).route, 'ems')
})

t.test('unit status follows the assignment; update and close arrive as EIDO; dispositions carry APCO codes', async (t) => {
  const base = eidoFixture<{ cautionComponent: object[]; incidentComponent: Record<string, unknown> }>('mental-health-crisis')
  const callId = `${base.$id}-lifecycle`
  const twinId = `twin-${randomUUID()}`
  const twinCall = { ...TWINS['mental-health-crisis']!.call, callId: twinId }
  const created = await postEido({ ...base, $id: callId })
  t.equal(created.statusCode, 201)
  await postNative({ eventId: `twin-${randomUUID()}`, type: 'call.created', occurredAt: base.lastUpdateTimeStamp, call: twinCall })
  const cru = created.json<Result>().decision.assignments.find((a) => a.queue === 'cru')!

  const move = async (action: string, body: object = {}) => {
    const res = await app.inject({ method: 'POST', url: `/v1/assignments/${cru.id}/${action}`, payload: body })
    t.equal(res.statusCode, 200, `${action}: ${res.body.slice(0, 200)}`)
    return (await getEido(callId)).emergencyResourceComponent.find((r) => r.$id.endsWith(cru.id))!.primaryUnitStatusRegistryText
  }
  t.equal(await move('acknowledge'), 'AcknowledgedTransmission')
  t.equal(await move('accept'), 'Dispatched')

  // An update: the caller now says there is a knife. First seen → created; this one → updated.
  const update = structuredClone(base)
  update.lastUpdateTimeStamp = '2026-11-23T09:20:00-06:00'
  update.cautionComponent.push({ $id: 'caution-knife', cautionTypeInternalText: 'knife', cautionTypeCommonRegistryText: 'Weapons', cautionSeverity: 'high' })
  const updated = await postEido({ ...update, $id: callId })
  t.equal(updated.statusCode, 201)
  const twinUpdated = await postNative({ eventId: `twin-${randomUUID()}`, type: 'call.updated', occurredAt: update.lastUpdateTimeStamp, call: { ...twinCall, flags: { ...twinCall.flags, weapons: true } } })
  sameDecision(t, updated.json<Result>(), twinUpdated.json<Result>(), 'update')
  t.equal(updated.json<Result>().decision.route, 'co_response')
  const events = await world.db.selectFrom('call_events').select(['type']).where('call_id', '=', callId).orderBy('received_at').execute()
  t.same(events.map((e) => e.type), ['call.created', 'call.updated'])

  t.equal(await move('complete', { disposition: 'resolved_by_phone' }), 'Cleared')

  // Closed by phone: APCO disposition 05.
  const close = structuredClone(update)
  close.lastUpdateTimeStamp = '2026-11-23T09:45:00-06:00'
  close.incidentComponent.incidentStatusCommonRegistryText = ['Closed']
  close.incidentComponent.dispositionComponent = [{ $id: 'disp-1', dispositionCommonRegistryCode: '05', dispositionPrimaryIndicator: true }]
  const closed = await postEido({ ...close, $id: callId })
  t.equal(closed.statusCode, 201)
  const twinClosed = await postNative({
    eventId: `twin-${randomUUID()}`,
    type: 'call.closed',
    occurredAt: close.lastUpdateTimeStamp,
    call: { ...twinCall, flags: { ...twinCall.flags, weapons: true }, disposition: 'resolved_by_phone' },
  })
  sameDecision(t, closed.json<Result>(), twinClosed.json<Result>(), 'close')

  const out = await getEido(callId)
  t.ok(eidoOutSchema.safeParse(out).success)
  t.same(out.incidentComponent.incidentStatusCommonRegistryText, ['Closed'])
  const codes = (out.incidentComponent.dispositionComponent ?? []).map((d) => `${d.dispositionCommonRegistryCode}:${d.dispositionPrimaryIndicator}`)
  t.same(codes, ['05:true', '05:false'], 'the call’s disposition and the CRU assignment’s')
  const statuses = resources(out)
  t.ok(statuses.includes('CrisisInterventionUnit/CrisisInterventionSpecialist/Cleared'), 'the completed CRU assignment is cleared')
  t.ok(statuses.includes('LawEnforcementUnit/LawEnforcementOfficer/AssignmentCancelled'), 'the police assignment still open at close is cancelled')
  t.ok(statuses.includes('CrisisInterventionUnit/SocialWorker/Assigned'), 'the mental-health follow-up is assigned')
})

t.test('referred to a partner agency: APCO disposition 15', async (t) => {
  const doc = eidoFixture<{ incidentComponent: Record<string, unknown> }>('weapons-patient')
  const callId = `${doc.$id}-referred`
  t.equal((await postEido({ ...doc, $id: callId })).statusCode, 201)
  doc.lastUpdateTimeStamp = '2026-11-23T23:30:00Z'
  doc.incidentComponent.incidentStatusCommonRegistryText = ['Closed']
  doc.incidentComponent.dispositionComponent = [{ $id: 'd-15', dispositionCommonRegistryCode: '15' }]
  const res = await postEido({ ...doc, $id: callId })
  t.equal(res.statusCode, 201)
  const call = (await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}` })).json<{ disposition: string }>()
  t.equal(call.disposition, 'referred_crisis_center')
  const out = await getEido(callId)
  t.same(out.incidentComponent.dispositionComponent?.map((d) => d.dispositionCommonRegistryCode), ['15'])
})

t.test('a call that ended otherwise than its CRU assignment: the EIDO states the call’s disposition, and posting it back keeps it', async (t) => {
  const base = eidoFixture('mental-health-crisis')
  const callId = `${base.$id}-transported`
  const created = await postEido({ ...base, $id: callId })
  t.equal(created.statusCode, 201)
  const cru = created.json<Result>().decision.assignments.find((a) => a.queue === 'cru')!
  for (const [action, body] of [['acknowledge', {}], ['accept', {}], ['complete', { disposition: 'resolved_by_phone' }]] as const) {
    const res = await app.inject({ method: 'POST', url: `/v1/assignments/${cru.id}/${action}`, payload: body })
    t.equal(res.statusCode, 200, `${action}: ${res.body.slice(0, 200)}`)
  }
  // The CRU talked to the caller, then EMS took the subject to hospital: the call closes as transported.
  const twin = TWINS['mental-health-crisis']!.call
  const close = await postNative({ eventId: `close-${randomUUID()}`, type: 'call.closed', occurredAt: '2026-11-23T10:05:00-06:00', call: { ...twin, callId, disposition: 'transported' } })
  t.equal(close.statusCode, 201, close.body.slice(0, 300))

  const out = await getEido(callId)
  t.ok(eidoOutSchema.safeParse(out).success)
  const dispositions = out.incidentComponent.dispositionComponent ?? []
  t.same(
    dispositions.map((d) => `${d.dispositionCommonRegistryCode}:${d.dispositionPrimaryIndicator}`),
    ['urn:cad-router:disposition:transported:true', '05:false'],
    'the call’s own disposition is the primary one; the CRU assignment’s follows, not primary',
  )

  // Read back, it is still a transport, not a call handled by phone.
  const again = eidoInSchema.parse({ ...out, $id: `${callId}-again` })
  t.equal(eidoToCallEvent(again).call.disposition, 'transported')
  const back = await postEido({ ...out, $id: `${callId}-again` })
  t.equal(back.statusCode, 201, back.body.slice(0, 300))
  const view = (await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(`${callId}-again`)}` })).json<{ status: string; disposition: string }>()
  t.same({ status: view.status, disposition: view.disposition }, { status: 'closed', disposition: 'transported' })
})

t.test('a call handed to another agency: each resource names the agency that holds its assignment, the new one owns the incident', async (t) => {
  const first = callEvent({ agency: 'hastings-pd', natureCode: 'NOISE' })
  t.equal((await postNative(first)).statusCode, 201)
  const { callId } = first.call
  const handed = { ...first, eventId: `${first.eventId}-handed`, type: 'call.updated', occurredAt: new Date(Date.parse(first.occurredAt) + 1000).toISOString(), call: { ...first.call, agency: 'rosemount-pd' } }
  t.equal((await postNative(handed)).statusCode, 201)
  const view = (await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}` })).json<{ agency: string; assignments: { id: string; agency: string }[] }>()
  t.equal(view.agency, 'rosemount-pd')
  t.ok(view.assignments.some((a) => a.agency === 'hastings-pd'), 'Hastings keeps the assignment it took')

  const out = await getEido(callId)
  t.ok(eidoOutSchema.safeParse(out).success)
  t.same(out.agencyComponent.filter((a) => a.incidentOwningAgencyIndicator).map((a) => a.$id), ['rosemount-pd'], 'the call’s agency owns the incident')
  const agencyOfAgent = new Map(out.agentComponent.map((a) => [a.$id, a.agencyReference.$ref]))
  const listed = new Set(out.agencyComponent.map((a) => a.$id))
  for (const a of view.assignments) {
    const resource = out.emergencyResourceComponent.find((r) => r.$id === `${callId}#resource-${a.id}`)
    const agency = agencyOfAgent.get(resource?.agentReference[0]?.$ref ?? '')
    t.equal(agency, a.agency, `resource ${a.id} names ${a.agency}`)
    t.ok(listed.has(a.agency), `${a.agency} is an agency component`)
  }
  // Read back, the document is still the Rosemount call.
  t.equal(eidoToCallEvent(eidoInSchema.parse(out)).call.agency, 'rosemount-pd')
})

t.test('GET of an unknown call is a 404 problem', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/v1/calls/nope/eido' })
  t.equal(res.statusCode, 404)
  t.equal(res.json().code, 'not-found')
})
