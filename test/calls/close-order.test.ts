/**
 * call.closed and the order of a call's events. A CAD's positions disagree on the time by a second
 * or two, so the close can be dated before the last update it follows; a close is the end of the
 * incident all the same. And what a second close, or an event after the close, does.
 */
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { createWorld } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

const world = await createWorld(t)
const { app, db } = world

interface Result {
  eventId: string
  callId: string
  applied: boolean
  decision: { id: string; route: string; assignments: { id: string; queue: string; role: string; status: string }[]; explanation: string; fallback: unknown }
}

const post = (body: unknown) => app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object })
const readCall = async (callId: string) => (await app.inject({ method: 'GET', url: `/v1/calls/${callId}` })).json()
const at = (s: string) => `2026-11-23T${s}Z`

t.test('a close dated before the last applied update closes the call, which keeps the update’s details', async (t) => {
  const created = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, priority: 3, occurredAt: at('15:00:00') })
  const first = (await post(created)).json<Result>()
  t.equal(first.decision.route, 'cru')
  const cruId = first.decision.assignments[0]!.id
  const { callId } = created.call
  // The call-taker's position adds substance use and raises the priority at 15:20:02 ...
  const update = callEvent({ type: 'call.updated', callId, natureCode: 'EDP', flags: { mentalHealth: true, substanceUse: true }, priority: 2, occurredAt: at('15:20:02') })
  const updated = (await post(update)).json<Result>()
  t.equal(updated.applied, true)
  // ... and the CRU desk, whose clock is two seconds behind, closes the incident at "15:20:00".
  const close = callEvent({ type: 'call.closed', callId, natureCode: 'EDP', flags: { mentalHealth: true }, priority: 3, disposition: 'resolved_by_phone', occurredAt: at('15:20:00') })
  const res = await post(close)
  t.equal(res.statusCode, 201)
  const closed = res.json<Result>()
  t.equal(closed.applied, true, 'the close is applied: it closed the call')
  t.not(closed.decision.id, updated.decision.id, 'a decision of its own')
  t.equal(closed.decision.route, 'cru', 'the call keeps its route')
  t.same(closed.decision.assignments.map((a) => `${a.queue}:${a.role}`), ['follow_up:primary'], 'its follow-up (DESIGN rule 8)')
  t.match(closed.decision.explanation, /^Close dated 2026-11-23T15:20:00.000Z, before the call's last applied event \(2026-11-23T15:20:02.000Z\): it closes the call/)

  const call = await readCall(callId)
  t.equal(call.status, 'closed')
  t.equal(call.disposition, 'resolved_by_phone')
  t.ok(call.closedAt)
  t.equal(call.assignments.find((a: { id: string }) => a.id === cruId).status, 'cancelled', 'the CRU assignment no longer counts as open work')
  // The update is newer than the close's snapshot: the call keeps what it said.
  t.equal(call.priority, 2)
  t.equal(call.flags.substanceUse, true)
  t.same(
    call.events.map((e: { eventId: string; applied: boolean; decisionId: string | null }) => [e.eventId, e.applied, e.decisionId !== null]),
    [[created.eventId, true, true], [update.eventId, true, true], [close.eventId, true, true]],
  )
  t.equal(call.events[2].decisionId, closed.decision.id)

  // Events still apply in occurredAt order: one dated between the close and the update is stale,
  // one after the update is refused as for any closed call.
  const between = await post(callEvent({ type: 'call.updated', callId, natureCode: 'NOISE', occurredAt: at('15:20:01') }))
  t.equal(between.statusCode, 201)
  t.equal(between.json<Result>().applied, false)
  t.equal(between.json<Result>().decision.id, closed.decision.id)
  const later = await post(callEvent({ type: 'call.updated', callId, natureCode: 'NOISE', occurredAt: at('15:25:00') }))
  t.equal(later.statusCode, 409)
  t.equal(later.json().code, 'call-closed')
  // The time given is when the service applied the close, not when CAD recorded it (15:20:00): said as such.
  t.match(later.json().detail, /applied its close at \d{4}-/, 'the detail says whose time it gives')

  // A repeat of the late close is answered from the record.
  const again = await post(close)
  t.equal(again.statusCode, 200)
  t.same(again.json<Result>(), closed)
})

t.test('a late close of a call another agency took over leaves it with that agency', async (t) => {
  const created = callEvent({ agency: 'hastings-pd', natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, occurredAt: at('16:00:00') })
  await post(created)
  const { callId } = created.call
  const moved = callEvent({ type: 'call.updated', callId, agency: 'dakota-so', natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, occurredAt: at('16:10:01') })
  t.equal((await post(moved)).json<Result>().applied, true)
  const close = callEvent({ type: 'call.closed', callId, agency: 'hastings-pd', natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, occurredAt: at('16:10:00') })
  const closed = (await post(close)).json<Result>()
  t.equal(closed.applied, true)
  const call = await readCall(callId)
  t.equal(call.status, 'closed')
  t.equal(call.agency, 'dakota-so')
  const fu = call.assignments.find((a: { queue: string }) => a.queue === 'follow_up')
  t.equal(fu.agency, 'dakota-so', "the follow-up is the call's agency's")
})

t.test('a second close is stored for the record and changes nothing, a corrected disposition included', async (t) => {
  const created = callEvent({ natureCode: 'EDP', occurredAt: at('17:00:00') })
  await post(created)
  const { callId } = created.call
  const close = callEvent({ type: 'call.closed', callId, natureCode: 'EDP', disposition: 'field_response', occurredAt: at('17:30:00') })
  const closed = (await post(close)).json<Result>()
  const closedAt = (await readCall(callId)).closedAt
  const correction = callEvent({ type: 'call.closed', callId, natureCode: 'EDP', disposition: 'resolved_by_phone', occurredAt: at('17:45:00') })
  const res = await post(correction)
  t.equal(res.statusCode, 201)
  t.equal(res.json<Result>().applied, false)
  t.equal(res.json<Result>().decision.id, closed.decision.id, "answered with the first close's decision")
  const call = await readCall(callId)
  t.equal(call.disposition, 'field_response', 'the first close’s disposition stays')
  t.equal(call.closedAt, closedAt)
  t.equal(call.assignments.filter((a: { queue: string }) => a.queue === 'follow_up').length, 1, 'one follow-up')
  t.same(call.events.at(-1), { ...call.events.at(-1), eventId: correction.eventId, applied: false, decisionId: closed.decision.id })
})

t.test('nothing re-opens a closed call', async (t) => {
  const created = callEvent({ natureCode: 'EDP', occurredAt: at('18:00:00') })
  await post(created)
  const { callId } = created.call
  await post(callEvent({ type: 'call.closed', callId, natureCode: 'EDP', disposition: 'no_contact', occurredAt: at('18:30:00') }))
  const before = await db.selectFrom('call_events').select('event_id').where('call_id', '=', callId).execute()
  for (const type of ['call.updated', 'call.created'] as const) {
    const res = await post(callEvent({ type, callId, natureCode: 'EDP', flags: { weapons: true }, occurredAt: at('18:31:00') }))
    t.equal(res.statusCode, 409, type)
    t.equal(res.json().code, 'call-closed')
  }
  const after = await db.selectFrom('call_events').select('event_id').where('call_id', '=', callId).execute()
  t.equal(after.length, before.length, 'a refused event is not stored')
  const call = await readCall(callId)
  t.equal(call.status, 'closed')
  t.notOk(call.assignments.some((a: { queue: string }) => a.queue === 'police'), 'no police sent to a closed call')
})

t.test('with a CRU capacity limit, a late close gives the team its place back', async (t) => {
  const doc = defaultDocument() as Omit<ReturnType<typeof defaultDocument>, 'cru'> & { cru: Record<string, unknown> }
  doc.version = 2
  doc.cru = { ...doc.cru, 'rosemount-pd': { schedule: 'always', maxOpenAssignments: 1 } }
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'Rosemount CRU: one call at a time' } })).statusCode, 200)

  const created = callEvent({ agency: 'rosemount-pd', natureCode: 'EDP', occurredAt: at('19:00:00') })
  t.equal((await post(created)).json<Result>().decision.route, 'cru')
  const { callId } = created.call
  await post(callEvent({ type: 'call.updated', callId, agency: 'rosemount-pd', natureCode: 'EDP', priority: 1, occurredAt: at('19:10:01') }))
  await post(callEvent({ type: 'call.closed', callId, agency: 'rosemount-pd', natureCode: 'EDP', disposition: 'resolved_by_phone', occurredAt: at('19:10:00') }))
  const next = (await post(callEvent({ agency: 'rosemount-pd', natureCode: 'EDP', occurredAt: at('19:15:00') }))).json<Result>()
  t.equal(next.decision.route, 'cru', 'the next crisis call goes to CRU, not to police for want of a place')
  t.equal(next.decision.fallback, null)
})

t.test('occurredAt is ordered to the microsecond, as it is told apart for idempotency', async (t) => {
  // A CAD that writes microseconds (Java's Instant, .NET's "o") can date two events of one call
  // within one millisecond; the older one, arriving second, must not undo the newer one.
  const created = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, priority: 3, occurredAt: '2026-11-23T15:00:00.000100Z' })
  t.equal((await post(created)).statusCode, 201)
  const { callId } = created.call
  const update = callEvent({ type: 'call.updated', callId, natureCode: 'EDP', flags: { mentalHealth: true, substanceUse: true }, priority: 2, occurredAt: '2026-11-23T15:00:01.000900Z' })
  t.equal((await post(update)).json<Result>().applied, true)

  const older = await post(callEvent({ type: 'call.updated', callId, natureCode: 'NOISE', priority: 4, occurredAt: '2026-11-23T15:00:01.000500Z' }))
  t.equal(older.statusCode, 201)
  t.equal(older.json<Result>().applied, false, '400 µs older than the applied update: stale')
  let call = await readCall(callId)
  t.equal(call.natureCode, 'EDP')
  t.equal(call.priority, 2)

  // The close is 800 µs behind the update: a late close, and the call keeps the update's details.
  const close = callEvent({ type: 'call.closed', callId, natureCode: 'EDP', flags: { mentalHealth: true }, priority: 3, disposition: 'resolved_by_phone', occurredAt: '2026-11-23T15:00:01.000100Z' })
  const closed = (await post(close)).json<Result>()
  t.equal(closed.applied, true)
  t.match(closed.decision.explanation, /^Close dated 2026-11-23T15:00:01\.000100Z, before the call's last applied event \(2026-11-23T15:00:01\.000900Z\)/, 'the explanation shows the microseconds it turned on')
  call = await readCall(callId)
  t.equal(call.status, 'closed')
  t.equal(call.priority, 2)
  t.equal(call.flags.substanceUse, true)
})
