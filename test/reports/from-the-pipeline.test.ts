/**
 * Report figures of calls driven through the real pipeline. Capture's `escalation` is police taking
 * a call over by escalation: a primary offered again in its own queue, or a case manager's call
 * handed to CRU, sends nobody to police and must not be counted as if it had. A follow-up's time to
 * acknowledge runs from when it is offered.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { QueueName } from '../../src/routing/index.js'
import { offerNow } from '../../src/workers/responder-worker.js'
import { sweep } from '../../src/workers/lifecycle-worker.js'
import { helpers } from '../assignments/fixtures/pipeline.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { post, move } = helpers(world)
const DEADLINES: Partial<Record<QueueName, number>> = { police: 60, cru: 60, ems: 60, case_management: 60 }
/** Offered `minutesAgo`, so its 60 s deadline has passed by the next sweep. */
const offerLate = (id: string, queue: QueueName, minutesAgo: number) => offerNow(world.db, id, queue, { ackDeadlines: DEADLINES, now: () => new Date(Date.now() - minutesAgo * 60_000) })
const capture = async (agency: string) => (await world.app.inject({ url: `/v1/reports/summary?agency=${agency}` })).json().overall.capture
const queues = async (callId: string) =>
  (await world.db.selectFrom('assignments').select(['queue', 'role', 'escalated_from']).where('call_id', '=', callId).execute()).map((a) => `${a.queue}/${a.role}${a.escalated_from ? ' (escalated)' : ''}`).sort()

t.test('a mental-health call whose EMS primary is offered again to EMS went to no police', async (t) => {
  const agency = 'cap-ems'
  const od = await post({ natureCode: 'OD', agency, flags: { mentalHealth: true } })
  t.equal(od.decision.route, 'ems')
  const ems = od.decision.assignments.find((a) => a.queue === 'ems')!
  t.equal(await offerLate(ems.id, 'ems', 10), 'offered')
  await sweep(world.db, undefined, DEADLINES)
  t.same(await queues(od.callId), ['cru/support', 'ems/primary', 'ems/primary (escalated)'], 'offered again in its own queue')
  t.same(await capture(agency), { eligible: 1, captured: 0, rate: 0, toPolice: { fallback: 0, override: 0, escalation: 0 }, otherRoute: 1 })
})

t.test('a case manager who declines hands the call to CRU: still captured', async (t) => {
  const agency = 'cap-cm'
  const personId = 'P-CAP-CM'
  t.equal((await world.app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager: 'cm-1' } })).statusCode, 201)
  await post({ natureCode: 'NOISE', agency, personId })
  const call = await post({ natureCode: 'EDP', agency, personId })
  t.equal(call.decision.route, 'case_manager')
  const cm = call.decision.assignments.find((a) => a.queue === 'case_management')!
  t.equal((await move(cm.id, 'decline')).statusCode, 200)
  t.notOk((await queues(call.callId)).some((q) => q.startsWith('police/')), 'no police assignment')
  t.same(await capture(agency), { eligible: 1, captured: 1, rate: 1, toPolice: { fallback: 0, override: 0, escalation: 0 }, otherRoute: 0 })
})

t.test('a CRU primary not acknowledged in time, escalated to a police-led response: to police by escalation', async (t) => {
  const agency = 'cap-cru'
  const call = await post({ natureCode: 'EDP', agency })
  t.equal(call.decision.route, 'cru')
  const cru = call.decision.assignments.find((a) => a.queue === 'cru')!
  t.equal(await offerLate(cru.id, 'cru', 10), 'offered')
  await sweep(world.db, undefined, DEADLINES)
  t.ok((await queues(call.callId)).includes('police/primary (escalated)'), 'police took it over')
  t.same(await capture(agency), { eligible: 1, captured: 0, rate: 0, toPolice: { fallback: 0, override: 0, escalation: 1 }, otherRoute: 0 })
})

t.test('a police support the escalation makes primary: to police by escalation', async (t) => {
  // A rule set may put police beside CRU on its CRU route: escalating to co-response then makes the
  // police support primary instead of making a new police assignment.
  const agency = 'cap-beside'
  const call = await post({ natureCode: 'EDP', agency })
  const cru = call.decision.assignments.find((a) => a.queue === 'cru')!
  const { decision_id } = await world.db.selectFrom('assignments').select('decision_id').where('id', '=', cru.id).executeTakeFirstOrThrow()
  const beside = randomUUID()
  await world.db.insertInto('assignments').values({ id: beside, call_id: call.callId, decision_id, agency, queue: 'police', role: 'support', status: 'queued' }).execute()
  t.equal(await offerLate(cru.id, 'cru', 10), 'offered')
  await sweep(world.db, undefined, DEADLINES)
  const police = await world.db.selectFrom('assignments').select(['role', 'escalated_from']).where('id', '=', beside).executeTakeFirstOrThrow()
  t.same(police, { role: 'primary', escalated_from: null }, 'the support became primary; no new police assignment')
  t.same(await capture(agency), { eligible: 1, captured: 0, rate: 0, toPolice: { fallback: 0, override: 0, escalation: 1 }, otherRoute: 0 })
})

t.test('a follow-up acknowledged while still reserved waited no time; never less', async (t) => {
  const agency = 'ack-early'
  const call = await post({ natureCode: 'EDP', agency })
  t.equal(call.decision.route, 'cru')
  const closed = await post({ type: 'call.closed', callId: call.callId, natureCode: 'EDP', agency, disposition: 'resolved_by_phone' })
  const followUp = closed.decision.assignments.find((a) => a.queue === 'follow_up')
  t.equal(followUp?.status, 'reserved', 'held back a day after the close')
  t.equal((await move(followUp!.id, 'acknowledge')).statusCode, 200, 'a console takes it up at once')
  const report = (await world.app.inject({ url: `/v1/reports/summary?agency=${agency}` })).json()
  t.same(report.overall.timeToAcknowledge.follow_up, { acknowledged: 1, p50Seconds: 0, p90Seconds: 0 })
})
