import { loadDefaultRuleSet } from '../../src/routing/default-rule-set.js'
import t from 'tap'
import { escalateAssignment } from '../../src/assignments/escalation.js'
import { planAssignments } from '../../src/calls/plan.js'
import { loadConfig } from '../../src/config.js'
import { sweep } from '../../src/workers/lifecycle-worker.js'
import { createWorld } from '../helpers/world.js'
import { helpers, startPipeline } from './fixtures/pipeline.js'

// The clock the API reads (listing, overdue flag); the follow-up is offered by real time in the worker.
let offsetMs = 0
const DUE_HOURS = 2 / 3600 // offered 2 s after closing
const world = await createWorld(t, { now: () => new Date(Date.now() + offsetMs), env: { FOLLOW_UP_DUE_HOURS: String(DUE_HOURS) } })
const { lifecycleQueue } = await startPipeline(t, world)
const { post, move, call, assignment, until } = helpers(world)

t.test('defaults: reserved until 24 h after closing, due 72 h after closing', async (t) => {
  const config = loadConfig({})
  t.equal(config.FOLLOW_UP_DUE_HOURS, 24)
  t.equal(config.FOLLOW_UP_DEADLINE_HOURS, 72)
  t.same(config.ACK_DEADLINES, { police: 30, cru: 60, ems: 30, case_management: 120 })
  const now = new Date('2026-11-23T15:00:00Z')
  const plan = planAssignments({
    eventType: 'call.closed',
    decision: { route: 'police', assignments: [], followUp: null, override: null },
    existing: [],
    mentalHealthCall: true,
    now,
    defaultFollowUpHours: config.FOLLOW_UP_DEADLINE_HOURS,
    followUpOfferHours: config.FOLLOW_UP_DUE_HOURS,
    routes: loadDefaultRuleSet().routes,
  })
  const fu = plan.assignments[0]!
  t.equal(fu.status, 'reserved')
  t.equal(fu.reservedUntil?.toISOString(), '2026-11-24T15:00:00.000Z')
  t.equal(fu.dueAt?.toISOString(), '2026-11-26T15:00:00.000Z')
})

t.test('a closed mental-health call’s follow-up is reserved, offered when due, flagged when overdue', async (t) => {
  const created = await post({ natureCode: 'EDP', agency: 'fu-pd', occurredAt: '2026-11-23T09:00:00Z' })
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'EDP', agency: 'fu-pd', occurredAt: '2026-11-23T09:20:00Z' })
  const fuId = closed.decision.assignments.find((a) => a.queue === 'follow_up')!.id
  const reserved = await assignment(fuId)
  t.equal(reserved.status, 'reserved')
  const closedAt = new Date((await call(created.callId)).closedAt!).getTime()
  t.equal(new Date(reserved.reservedUntil!).getTime() - closedAt, Math.round(DUE_HOURS * 3600_000))
  t.equal(new Date(reserved.dueAt!).getTime() - closedAt, 72 * 3600_000, 'due within 72 h (the rule set’s follow-up)')
  t.equal(reserved.overdue, false)

  // The job reached the worker at once and waits in Redis, delayed, until the follow-up is due.
  const row = await until(fuId, 'offered')
  const offeredAt = (await call(created.callId)).assignments.find((a) => a.id === fuId)!.transitions.find((x) => x.to === 'offered')!
  t.ok(new Date(offeredAt.at).getTime() >= new Date(reserved.reservedUntil!).getTime(), 'not offered before it is due')
  t.equal(row.ack_deadline_at, null, 'follow-ups have no acknowledgement deadline by default')

  // Past its due time and still open: flagged in the listing, and listed by overdue=true.
  offsetMs = 73 * 3600_000
  const late = await assignment(fuId)
  t.equal(late.overdue, true)
  const res = await world.app.inject({ method: 'GET', url: '/v1/assignments?queue=follow_up&overdue=true' })
  t.same(res.json().items.map((a: { id: string }) => a.id), [fuId])
  offsetMs = 0

  // For the feed: a delayed job waits for the due time, and records the overdue follow-up as a
  // transition (status unchanged); the sweep does the same for what Redis lost.
  const check = await lifecycleQueue.getJob(`overdue-${fuId}`)
  t.equal(await check?.getState(), 'delayed')
  t.ok(Math.abs(check!.timestamp + check!.delay - new Date(reserved.dueAt!).getTime()) < 5000, 'due at dueAt')
  const r = await sweep(world.db, lifecycleQueue, world.config.ACK_DEADLINES, new Date(Date.now() + 73 * 3600_000))
  t.equal(r.overdue, 1)
  const again = await sweep(world.db, lifecycleQueue, world.config.ACK_DEADLINES, new Date(Date.now() + 74 * 3600_000))
  t.equal(again.overdue, 0, 'recorded once')
  const last = (await call(created.callId)).assignments.find((a) => a.id === fuId)!.transitions.at(-1)!
  t.match(last, { from: 'offered', to: 'offered', actor: 'system:follow-up-deadline', reason: /^overdue: not done by / })
})

t.test('a reserved follow-up that is declined is offered again when due, not at once', async (t) => {
  const created = await post({ natureCode: 'EDP', agency: 'fu-decline' })
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'EDP', agency: 'fu-decline' })
  const fuId = closed.decision.assignments.find((a) => a.queue === 'follow_up')!.id
  const original = await assignment(fuId)
  t.equal(original.status, 'reserved')
  const res = await move(fuId, 'decline', { actor: 'sw-desk', reason: 'caseload full' })
  t.equal(res.statusCode, 200, 'a reserved follow-up may be declined')
  t.equal(res.json().status, 'declined')
  const declinedAt = Date.now()
  t.ok(new Date(original.reservedUntil!).getTime() > declinedAt, 'declined while its reservation was ahead')

  const history = (await call(created.callId)).assignments
  const next = history.find((a) => a.queue === 'follow_up' && a.id !== fuId)!
  t.ok(next, 'a follow-up offered again')
  const again = await assignment(next.id)
  t.match(again, { status: 'reserved', role: 'primary', escalatedFrom: fuId, reservedUntil: original.reservedUntil, dueAt: original.dueAt }, 'its reservation and due time kept')
  t.match(next.transitions[0], { from: null, to: 'reserved', reason: new RegExp(`^escalated from follow_up assignment ${fuId} \\(declined\\); reserved until ${original.reservedUntil}`) })

  // The worker holds its job until then, as for the first.
  await until(next.id, 'offered')
  const offered = (await call(created.callId)).assignments.find((a) => a.id === next.id)!.transitions.find((x) => x.to === 'offered')!
  t.ok(new Date(offered.at).getTime() >= new Date(original.reservedUntil!).getTime(), 'not offered before it is due')
})

t.test('a follow-up declined after its reservation has passed is offered again at once, due as before', async (t) => {
  const created = await post({ natureCode: 'EDP', agency: 'fu-decline-late' })
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'EDP', agency: 'fu-decline-late' })
  const fuId = closed.decision.assignments.find((a) => a.queue === 'follow_up')!.id
  const original = await assignment(fuId)
  // Declined, as seen from a clock past the reservation (whether the worker offered it yet or not).
  const later = new Date(new Date(original.reservedUntil!).getTime() + 60_000)
  const r = await escalateAssignment(world.db, fuId, { kind: 'decline', actor: 'sw-desk' }, { now: later })
  t.equal(r.view.status, 'declined')
  t.match(r.created, [{ queue: 'follow_up', status: 'queued', reservedUntil: null, dueAt: original.dueAt }])
  t.equal(r.created.length, 1, 'one follow-up in its place')
})

t.test('a declined follow-up is offered again to the follow-up team, whatever fallback its rule set names for follow_up: its call is closed', async (t) => {
  // For follow_up a fallback would send responders to a call that is over, where no close will ever
  // cancel them (a closed call takes no more events). Verification now refuses one; a rule set
  // stored before may hold one: the close's decision is made to name such a version.
  const doc = structuredClone(loadDefaultRuleSet())
  doc.version = 2
  doc.escalation = { ...doc.escalation, follow_up: 'case_manager' }
  const refused = await world.app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })
  t.equal(refused.statusCode, 422, 'refused when stored now')
  t.match(JSON.stringify(refused.json()), /escalation\.follow_up/)
  await world.db.insertInto('rule_sets').values({ version: 2, name: doc.name, document: JSON.stringify(doc), status: 'retired' }).execute()

  const created = await post({ natureCode: 'EDP', agency: 'fu-fallback' })
  const closed = await post({ type: 'call.closed', callId: created.callId, natureCode: 'EDP', agency: 'fu-fallback' })
  const { decision_id } = await world.db.selectFrom('calls').select('decision_id').where('call_id', '=', created.callId).executeTakeFirstOrThrow()
  await world.db.updateTable('decisions').set({ rule_set_version: 2 }).where('id', '=', decision_id!).execute()
  const fuId = closed.decision.assignments.find((a) => a.queue === 'follow_up')!.id
  const original = await assignment(fuId)
  const res = await move(fuId, 'decline', { actor: 'sw-desk', reason: 'caseload full' })
  t.equal(res.statusCode, 200)
  t.equal(res.json().status, 'declined')

  const after = await call(created.callId)
  t.equal(after.status, 'closed')
  const fresh = after.assignments.filter((a) => a.transitions[0]?.reason?.includes(`escalated from follow_up assignment ${fuId}`))
  t.same(fresh.map((a) => `${a.queue}:${a.role}`), ['follow_up:primary'], 'the follow-up team again, not a case manager and CRU sent to a closed call')
  t.notOk(after.assignments.some((a) => a.queue !== 'follow_up' && ['queued', 'offered'].includes(a.status)), 'no responder is left open on the closed call')
  t.match(await assignment(fresh[0]!.id), { escalatedFrom: fuId, dueAt: original.dueAt }, 'due as the first')
})
