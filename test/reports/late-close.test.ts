/**
 * A call closed by a close dated before its last update (a late close: the call keeps the update's
 * details) counts in the reports as the same call closed on time would.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { app } = world

const post = async (body: unknown) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json<{ applied: boolean; decision: { route: string } }>()
}
const summary = async (agency: string) => {
  const from = new Date(Date.now() - 3600_000).toISOString()
  const to = new Date(Date.now() + 3600_000).toISOString()
  const res = await app.inject({ url: `/v1/reports/summary?from=${from}&to=${to}&agency=${agency}` })
  t.equal(res.statusCode, 200, res.body)
  return res.json().overall
}
const at = (s: string) => `2026-11-23T${s}Z`

// A crisis call (CRU) that an update turns into threats (DESIGN rule 1: police lead it, CRU beside
// them); the close comes from a position whose clock is behind and whose screen still said EDP.
async function threatsCall(agency: string, close: { natureCode: string; occurredAt: string }) {
  const created = callEvent({ agency, natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: at('15:00:00') })
  t.equal((await post(created)).decision.route, 'cru')
  const { callId } = created.call
  const update = callEvent({ type: 'call.updated', callId, agency, natureCode: 'THREATS', flags: { mentalHealth: true }, occurredAt: at('15:20:02') })
  t.equal((await post(update)).decision.route, 'co_response')
  t.equal((await post(callEvent({ type: 'call.closed', callId, agency, flags: { mentalHealth: true }, disposition: 'field_response', ...close }))).applied, true)
  return callId
}

t.test('a late-closed call counts as the call it is: a safety call is not eligible for capture', async (t) => {
  // Closed on time, the close saying what the call is; and late, two seconds before the update.
  await threatsCall('rosemount-pd', { natureCode: 'THREATS', occurredAt: at('15:20:04') })
  const callId = await threatsCall('hastings-pd', { natureCode: 'EDP', occurredAt: at('15:20:00') })
  const call = (await app.inject({ url: `/v1/calls/${callId}` })).json()
  t.match(call, { status: 'closed', natureCode: 'THREATS', route: 'co_response' }, 'the late-closed call keeps the threats')
  const onTime = await summary('rosemount-pd')
  const late = await summary('hastings-pd')
  t.same(onTime.capture, { eligible: 0, captured: 0, rate: null, toPolice: { fallback: 0, override: 0, escalation: 0 }, otherRoute: 0 }, 'on time: rule 1 applies, not eligible')
  t.same(late.capture, onTime.capture, 'late: the same')
  t.equal(late.mentalHealthCalls, 1)
  t.same(late.diversion, onTime.diversion)
  t.same(late.routeMix, onTime.routeMix)
})
