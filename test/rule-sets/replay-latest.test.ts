/**
 * Replay takes the facts of each call's latest routing decision: the one of its latest applied
 * event, as ingest applies events (in occurredAt order), not the one whose API clock read latest.
 * Two API instances serve one call: the one that applies the later event read its clock before it
 * waited for the call's lock, or runs a little behind; its decision then carries the earlier time.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'

let clock = new Date('2026-11-23T15:00:05Z')
const world = await createWorld(t, { now: () => clock })
const { app } = world

t.test('the decision of the latest applied event is replayed, whatever time its API clock gave it', async (t) => {
  const calls = 8
  for (let i = 0; i < calls; i++) {
    const created = callEvent({ natureCode: 'SICK', flags: { medicalEmergency: true }, occurredAt: '2026-11-23T15:00:00Z' })
    clock = new Date('2026-11-23T15:00:05Z')
    t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).json().decision.route, 'ems')
    // Applied after the first (dated after it), decided by an instance whose clock read a second earlier.
    clock = new Date('2026-11-23T15:00:04Z')
    const updated = callEvent({ type: 'call.updated', callId: created.call.callId, natureCode: 'WEAPON', flags: { weapons: true }, occurredAt: '2026-11-23T15:00:02Z' })
    const res = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: updated })).json()
    t.equal(res.applied, true)
    t.equal(res.decision.route, 'police', 'the update is the call’s current decision')
  }
  const now = Date.now()
  const range = { from: new Date(now - 86_400_000).toISOString(), to: new Date(now + 86_400_000).toISOString() }
  const res = await app.inject({ method: 'POST', url: '/v1/rule-sets/1/replay', payload: range })
  t.equal(res.statusCode, 200)
  t.same(res.json().candidate.routeMix, { police: calls, cru: 0, co_response: 0, ems: 0, case_manager: 0 }, 'each call replays from its update, as it stands')
})
