import t from 'tap'
import { createWorld } from '../helpers/world.js'
import { helpers, startPipeline } from './fixtures/pipeline.js'

// Deadlines long enough never to fire here: this file is about the forward path.
const world = await createWorld(t, { env: { ACK_DEADLINES: 'police=600,cru=600,ems=600,case_management=600,follow_up=600', FOLLOW_UP_DUE_HOURS: '0' } })
await startPipeline(t, world)
const { post, move, call, assignment, until } = helpers(world)

const cases = [
  { queue: 'police', input: { natureCode: 'NOISE' }, disposition: 'report_taken' },
  { queue: 'cru', input: { natureCode: 'EDP' }, disposition: 'resolved_by_phone' },
  { queue: 'ems', input: { natureCode: 'CARDIAC', flags: { medicalEmergency: true } }, disposition: 'transported' },
  { queue: 'case_management', input: { natureCode: 'EDP', dispatcherOverride: 'case_manager' as const }, disposition: 'referred_case_management' },
] as const

for (const c of cases) {
  t.test(`${c.queue}: queued → offered → acknowledged → accepted → completed, with a disposition`, async (t) => {
    const created = await post({ ...c.input, agency: `flow-${c.queue}` })
    const a = created.decision.assignments.find((x) => x.queue === c.queue && x.role === 'primary')!
    t.ok(a, `a ${c.queue} primary`)
    await until(a.id, 'offered')
    const offered = await assignment(a.id)
    t.ok(offered.ackDeadlineAt, 'an offer carries its acknowledgement deadline')
    t.equal((await move(a.id, 'acknowledge', { actor: 'desk-1' })).json().status, 'acknowledged')
    t.equal((await move(a.id, 'accept', { actor: 'unit-7', reason: 'en route' })).json().status, 'accepted')
    const done = await move(a.id, 'complete', { actor: 'unit-7', disposition: c.disposition })
    t.equal(done.statusCode, 200)
    t.equal(done.json().disposition, c.disposition)
    t.equal((await assignment(a.id)).disposition, c.disposition, 'the listing shows the disposition')

    const history = (await call(created.callId)).assignments.find((x) => x.id === a.id)!
    t.same(
      history.transitions.map((x) => `${x.from}>${x.to}`),
      ['null>queued', 'queued>offered', 'offered>acknowledged', 'acknowledged>accepted', 'accepted>completed'],
    )
    t.ok(history.transitions.every((x) => x.actor && x.at), 'who and when on every move')
    t.equal(history.transitions[1]!.actor, `worker:${c.queue}`)
    t.equal(history.transitions[3]!.reason, 'en route')
  })
}

t.test('follow_up: a closed mental-health call’s follow-up runs the same lifecycle', async (t) => {
  const created = await post({ natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, agency: 'flow-follow-up', occurredAt: '2026-11-23T10:00:00Z' })
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'SUICTHRT', flags: { suicidalIdeation: true }, agency: 'flow-follow-up', occurredAt: '2026-11-23T10:30:00Z' })
  const fu = closed.decision.assignments.find((x) => x.queue === 'follow_up')!
  await until(fu.id, 'offered')
  for (const action of ['acknowledge', 'accept']) t.equal((await move(fu.id, action)).statusCode, 200)
  const done = await move(fu.id, 'complete', { disposition: 'no_contact' })
  t.equal(done.json().status, 'completed')
  t.equal(done.json().disposition, 'no_contact')
})

t.test('dispositions: APCO-style ones and the service’s own are accepted; anything else is refused', async (t) => {
  const created = await post({ natureCode: 'NOISE', agency: 'flow-dispositions' })
  const id = created.decision.assignments[0]!.id
  await move(id, 'accept')
  const bad = await move(id, 'complete', { disposition: 'beamed_up' })
  t.equal(bad.statusCode, 400)
  t.equal((await assignment(id)).status, 'accepted', 'a refused completion changes nothing')
  const ok = await move(id, 'complete', { disposition: 'referred_partner_agency' })
  t.equal(ok.json().disposition, 'referred_partner_agency')
})
