/**
 * A late-closed call is judged by the decision of its latest applied event (the details it keeps),
 * found by the events' order, not by the decisions' clocks: the instance that applied the update
 * may have stamped its decision before the one it followed (its clock read before it waited for
 * the call's lock, or a little behind).
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

let clock = new Date('2026-11-23T15:00:05Z')
const world = await createWorld(t, { now: () => clock })
const { app } = world

const post = async (body: unknown) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json<{ applied: boolean; decision: { route: string } }>()
}
const at = (s: string) => `2026-11-23T${s}Z`

t.test('a late-closed safety call is not eligible for capture, whatever the clocks of the decisions', async (t) => {
  const agency = 'hastings-pd'
  const created = callEvent({ agency, natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: at('15:00:00') })
  clock = new Date(at('15:00:05'))
  t.equal((await post(created)).decision.route, 'cru')
  const { callId } = created.call
  // Applied after the creation (dated after it), by an instance whose clock read a second earlier.
  clock = new Date(at('15:00:04'))
  const update = callEvent({ type: 'call.updated', callId, agency, natureCode: 'THREATS', flags: { mentalHealth: true }, occurredAt: at('15:20:02') })
  t.equal((await post(update)).decision.route, 'co_response')
  clock = new Date(at('15:30:00'))
  const close = callEvent({ type: 'call.closed', callId, agency, natureCode: 'EDP', flags: { mentalHealth: true }, disposition: 'field_response', occurredAt: at('15:20:00') })
  t.equal((await post(close)).applied, true)
  t.match((await app.inject({ url: `/v1/calls/${callId}` })).json(), { status: 'closed', natureCode: 'THREATS', route: 'co_response' })

  const from = new Date(Date.now() - 3600_000).toISOString()
  const to = new Date(Date.now() + 3600_000).toISOString()
  const res = await app.inject({ url: `/v1/reports/summary?from=${from}&to=${to}` })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json().overall.capture, { eligible: 0, captured: 0, rate: null, toPolice: { fallback: 0, override: 0, escalation: 0 }, otherRoute: 0 }, 'rule 1 governs the call: not eligible')
})
