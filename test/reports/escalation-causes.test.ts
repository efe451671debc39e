/**
 * The summary report's escalation causes, from escalations the service itself made: the deadline
 * job's processor and the sweep, on offers whose deadlines passed (the clock they were offered by
 * is set back, so nothing waits). Each stored reason says when and what followed, so no two are
 * alike; the report must still show one cause per kind, never the reasons themselves.
 */
import t from 'tap'
import type { QueueName } from '../../src/routing/index.js'
import { offerNow } from '../../src/workers/responder-worker.js'
import { runAckDeadline, sweep } from '../../src/workers/lifecycle-worker.js'
import { helpers } from '../assignments/fixtures/pipeline.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { post, move } = helpers(world)
const MINUTE = 60_000
const DEADLINES: Partial<Record<QueueName, number>> = { police: 60, cru: 60, ems: 60, case_management: 60 }

/** Offers the assignment as a worker would have `minutesAgo` minutes ago: its deadline has passed. */
const offerBack = (id: string, queue: QueueName, minutesAgo: number) => offerNow(world.db, id, queue, { ackDeadlines: DEADLINES, now: () => new Date(Date.now() - minutesAgo * MINUTE) })

type Cause = { status: string; reason: string; count: number }
const summary = async (agency: string) => {
  const res = await world.app.inject({ url: `/v1/reports/summary?agency=${agency}` })
  if (res.statusCode !== 200) throw new Error(`summary answered ${res.statusCode}: ${res.body}`)
  return res
}
const storedReasons = async (agency: string) =>
  (
    await world.db
      .selectFrom('assignment_transitions as t')
      .innerJoin('assignments as a', 'a.id', 't.assignment_id')
      .select(['t.to_status as status', 't.reason'])
      .where('a.agency', '=', agency)
      .where('t.to_status', 'in', ['escalated', 'expired', 'declined'])
      .execute()
  ).map((r) => `${r.status}: ${r.reason}`)

t.test('escalations by the deadline job and by the sweep: one cause, however the reasons read', async (t) => {
  const agency = 'causes-real'
  // A CRU call not acknowledged: the deadline job escalates it along the fallback.
  const crisis = await post({ natureCode: 'EDP', agency })
  const cru = crisis.decision.assignments.find((a) => a.queue === 'cru')!
  t.equal(await offerBack(cru.id, 'cru', 10), 'offered')
  t.equal(await runAckDeadline(world.db, { id: `ack-${cru.id}`, data: { assignmentId: cru.id } }), 'escalated')
  // Two police calls not acknowledged, their deadlines minutes apart: the sweep offers each again.
  for (const minutesAgo of [20, 30]) {
    const noise = await post({ natureCode: 'NOISE', agency })
    const police = noise.decision.assignments[0]!
    t.equal(police.queue, 'police')
    t.equal(await offerBack(police.id, 'police', minutesAgo), 'offered')
  }
  t.ok((await sweep(world.db, undefined, DEADLINES)).escalated >= 2)
  // A decline is handed on at once: counted, with the desk's words never shown.
  const declined = await post({ natureCode: 'EDP', agency })
  t.equal((await move(declined.decision.assignments[0]!.id, 'decline', { reason: 'no clinician free; try 4 West' })).statusCode, 200)

  const reasons = await storedReasons(agency)
  t.equal(reasons.length, 4)
  t.equal(new Set(reasons).size, 4, 'every stored reason is its own text (deadline, outcome)')
  for (const r of reasons.filter((r) => !r.startsWith('declined'))) t.match(r, /^(escalated|expired): not acknowledged by \d{4}-\d\d-\d\dT[\d:.]+Z; /)
  t.match(reasons.filter((r) => r.startsWith('declined')), [/^declined: declined: no clinician free; try 4 West; escalated to co_response/])

  const { overall, series } = (await summary(agency)).json<{
    overall: { escalations: { total: number; causes: Cause[] }; capture: { eligible: number; captured: number; toPolice: { escalation: number } } }
    series: { escalations: { total: number } }[]
  }>()
  t.match(overall.capture, { eligible: 2, captured: 0, toPolice: { escalation: 2 } }, 'neither CRU call was captured: one expired, the other declined')
  t.same(overall.escalations, {
    total: 4,
    causes: [
      { status: 'expired', reason: 'not acknowledged in time', count: 2 },
      { status: 'declined', reason: 'declined', count: 1 },
      { status: 'escalated', reason: 'not acknowledged in time', count: 1 },
    ],
  })
  t.notMatch(JSON.stringify(overall), /clinician/, "the desk's words never reach the report")
  t.equal(series.reduce((n, c) => n + c.escalations.total, 0), 4, 'the daily cells count the same moves')
  const csv = await world.app.inject({ url: `/v1/reports/summary?agency=${agency}`, headers: { accept: 'text/csv' } })
  const [header, all] = csv.body.split('\r\n').map((l) => l.split(','))
  t.equal(all![header!.indexOf('escalations')], '4', 'CSV: the causes summed')
})

t.test('reasons of other forms, and rows stored before: a closed set of causes, never the words', async (t) => {
  const agency = 'causes-stored'
  const created = await post({ natureCode: 'NOISE', agency })
  const id = created.decision.assignments[0]!.id
  // As older rows, other writers or a hand-made repair could have left them.
  const rows: [string, string | null][] = [
    ['escalated', 'declined: Jonas is known to us; escalated to co_response'],
    ['escalated', 'declined'],
    ['expired', null],
    ['expired', ''],
    ['expired', 'moved by hand after an outage'],
    ['escalated', 'not acknowledged by 2026-03-10T10:05:00.000Z'],
    // A decline before migration 0008: the console's words alone.
    ['declined', 'Jonas is at his sister'],
  ]
  for (const [to, reason] of rows) {
    await world.db.insertInto('assignment_transitions').values({ assignment_id: id, from_status: 'offered', to_status: to, role: 'primary', actor: 'test', reason }).execute()
  }
  const res = await summary(agency)
  t.same(res.json<{ overall: { escalations: { causes: Cause[] } } }>().overall.escalations.causes, [
    { status: 'escalated', reason: 'declined', count: 2 },
    { status: 'expired', reason: 'not recorded', count: 2 },
    { status: 'declined', reason: 'declined', count: 1 },
    { status: 'escalated', reason: 'not acknowledged in time', count: 1 },
    { status: 'expired', reason: 'other', count: 1 },
  ])
  t.notMatch(res.body, /Jonas|outage/, 'no stored words reach the report')
})

t.test('a CRU call stays captured when its follow-up declines; not when its primary does', async (t) => {
  const agency = 'causes-capture'
  const capture = async () => (await summary(agency)).json<{ overall: { capture: { eligible: number; captured: number; toPolice: { escalation: number } } } }>().overall.capture
  const created = await post({ natureCode: 'EDP', agency })
  const cru = created.decision.assignments.find((a) => a.queue === 'cru')!
  for (const action of ['acknowledge', 'accept']) t.equal((await move(cru.id, action)).statusCode, 200)
  t.equal((await move(cru.id, 'complete', { disposition: 'resolved_by_phone' })).statusCode, 200)
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'EDP', agency, disposition: 'resolved_by_phone' })
  const followUp = closed.decision.assignments.find((a) => a.queue === 'follow_up')
  t.ok(followUp, 'the close scheduled a follow-up')
  t.match(await capture(), { eligible: 1, captured: 1 })
  t.equal((await move(followUp!.id, 'decline', { reason: 'on leave, reassign' })).statusCode, 200)
  t.match(await capture(), { eligible: 1, captured: 1, toPolice: { escalation: 0 } }, 'days later, a declined follow-up changes nothing of how the call was handled')

  const other = await post({ natureCode: 'EDP', agency })
  t.equal((await move(other.decision.assignments.find((a) => a.queue === 'cru')!.id, 'decline')).statusCode, 200)
  t.match(await capture(), { eligible: 2, captured: 1, toPolice: { escalation: 1 } }, 'a CRU primary declined is not captured')
})
