/**
 * A call whose nature code is an agency's own (hastings-pd's `10-56`, which the default rule set maps
 * onto SUICTHRT) or one the rule set does not know comes out of GET …/eido as a document POST /v1/eido
 * takes, and it maps back onto a call that routes on the same nature code: the README's "an EIDO
 * that cad-router writes maps back onto the same call". The APCO code goes in
 * incidentTypeCommonRegistryText, the agency's own in incidentTypeInternalCode.
 */
import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { eidoOutSchema, type EidoOut } from '../../src/eido/schemas.js'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

interface Result {
  applied: boolean
  decision: { route: string; ruleId: string; review: string[]; assignments: { queue: string; role: string }[] }
}

const postNative = (ev: unknown) => app.inject({ method: 'POST', url: '/v1/call-events', payload: ev as object })
const postEido = (doc: unknown) => app.inject({ method: 'POST', url: '/v1/eido', payload: doc as object })
const getEido = async (callId: string): Promise<EidoOut> => {
  const res = await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}/eido` })
  if (res.statusCode !== 200) throw new Error(`GET eido answered ${res.statusCode}: ${res.body}`)
  return res.json<EidoOut>()
}
/** The nature code the call's latest decision routed on (after the agency's map), and whether the rule set knew it. */
const routedOn = async (callId: string) => {
  const row = await db.selectFrom('decisions').select('outcome').where('call_id', '=', callId).orderBy('created_at', 'desc').orderBy('id', 'desc').executeTakeFirstOrThrow()
  const { derived } = row.outcome as { derived: { natureCode: string; unknownNatureCode: boolean } }
  return { code: derived.natureCode, unknown: derived.unknownNatureCode }
}
const roles = (r: Result) => r.decision.assignments.map((a) => `${a.queue}:${a.role}`).sort()
const sameDecision = (t: Test, a: Result, b: Result, what: string) => {
  t.equal(a.decision.route, b.decision.route, `${what}: same route`)
  t.equal(a.decision.ruleId, b.decision.ruleId, `${what}: same rule`)
  t.same(roles(a), roles(b), `${what}: same assignments`)
  t.same(a.decision.review, b.decision.review, `${what}: same review marks`)
}

const cases = [
  { code: '10-56', common: 'SUICTHRT', routed: { code: 'SUICTHRT', unknown: false }, what: 'hastings-pd’s own code, mapped onto an APCO code' },
  { code: 'EDP', common: 'EDP', routed: { code: 'EDP', unknown: false }, what: 'an APCO code' },
  { code: 'MH CRISIS', common: 'urn:cad-router:nature-code:MH CRISIS', routed: { code: 'MH CRISIS', unknown: true }, what: 'a code the rule set does not know' },
  { code: 'edp', common: 'urn:cad-router:nature-code:edp', routed: { code: 'edp', unknown: true }, what: 'edp, which is not EDP (codes compare exactly)' },
]

for (const c of cases) {
  t.test(`${c.what} (${c.code}): out as an EIDO and back in, routed on the same code`, async (t) => {
    const callId = `DC26-agency-code-${randomUUID().slice(0, 8)}`
    const native = await postNative(callEvent({ callId, agency: 'hastings-pd', natureCode: c.code }))
    t.equal(native.statusCode, 201, native.body.slice(0, 300))
    t.same(await routedOn(callId), c.routed, 'the native call routes as the rule set says')

    const out = await getEido(callId)
    t.ok(eidoOutSchema.safeParse(out).success, 'the document validates against what GET …/eido promises')
    t.equal(out.incidentComponent.incidentTypeCommonRegistryText, c.common, 'the incident type is the code the call routes on')
    t.equal(out.incidentComponent.incidentTypeInternalCode, c.code === c.common ? undefined : c.code, 'the call’s own code beside it, where it differs')

    // As a new incident, as the other round-trip tests post it back.
    const again = await postEido({ ...out, $id: `${callId}-again` })
    t.equal(again.statusCode, 201, `posted back as a new incident: ${again.body.slice(0, 300)}`)
    t.same(await routedOn(`${callId}-again`), c.routed, 'routed on the same nature code')
    sameDecision(t, again.json<Result>(), native.json<Result>(), 'new incident')

    // As an update of the very call it was written from.
    const update = await postEido(out)
    t.equal(update.statusCode, 201, `posted back onto the same call: ${update.body.slice(0, 300)}`)
    t.ok(update.json<Result>().applied, 'applied as the call’s latest event, so decided anew')
    t.same(await routedOn(callId), c.routed, 'the update routes on the same nature code')
    sameDecision(t, update.json<Result>(), native.json<Result>(), 'update')
  })
}
