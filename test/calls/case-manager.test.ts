/**
 * DESIGN rule 6 routes a repeat caller "to that case manager": the case-management assignment a
 * decision makes names the case manager the decision saw (the case link at that moment) — in its
 * row, its job, the listing, the console feed and the facts stored with the decision — and keeps
 * naming them when the link changes afterwards.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { loadDefaultRuleSet } from '../../src/routing/index.js'
import { createOutboxRelay } from '../../src/queue/outbox-relay.js'
import { createQueues, jobIdFor } from '../../src/queue/queues.js'
import { createRedis } from '../../src/queue/redis.js'
import { callEvent } from '../helpers/events.js'
import { assignmentStreams, feedData } from '../helpers/sse.js'
import { createWorld, eventually, quietLog, REDIS_URL } from '../helpers/world.js'
import { closeQueues, inspectQueues } from '../queue/fixtures/delivery.js'

const world = await createWorld(t)
const { app, db, prefix, databaseUrl } = world
const base = await app.listen({ port: 0, host: '127.0.0.1' })
const stream = assignmentStreams(t, base)

// A relay and no worker: each job stays in its queue, to be read as a worker would get it.
const producer = createRedis(REDIS_URL, 'producer')
const queues = createQueues(producer, prefix)
const relay = createOutboxRelay({ db, databaseUrl, queues, log: quietLog, pollMs: 200, batchSize: 50 })
await relay.start()
const inspector = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
inspector.on('error', () => {})
const inspect = inspectQueues(inspector, prefix)
// Registered after createWorld, so it runs before the world drops the database (tap: last in, first out).
t.teardown(async () => {
  for (const step of [() => relay.stop(), () => closeQueues(queues), () => closeQueues(inspect), () => producer.quit(), () => inspector.quit()]) {
    await step().catch((err: Error) => console.error(`teardown: ${err.message}`))
  }
})

interface Decided {
  callId: string
  decision: { route: string; ruleId: string; assignments: { id: string; queue: string; role: string }[] }
}
interface Listed {
  id: string
  queue: string
  caseManager: string | null
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const link = async (personId: string, caseManager: string, active = true) => {
  const res = await app.inject({ method: 'PUT', url: `/v1/case-links/${personId}`, payload: { caseManager, active } })
  if (res.statusCode >= 300) throw new Error(`PUT case link answered ${res.statusCode}`)
}
async function post(ev: ReturnType<typeof callEvent>): Promise<Decided> {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })
  if (res.statusCode !== 201) throw new Error(`POST /v1/call-events answered ${res.statusCode}: ${res.body}`)
  return res.json<Decided>()
}
/** A repeat call about `personId`: the first call makes the second a repeat (DESIGN rule 6). */
async function repeatCall(personId: string): Promise<Decided> {
  await post(callEvent({ natureCode: 'EDP', personId }))
  return post(callEvent({ natureCode: 'EDP', personId }))
}
const listed = async (callId: string): Promise<Listed[]> => {
  const res = await app.inject({ method: 'GET', url: '/v1/assignments?limit=200' })
  const ids = new Set((await db.selectFrom('assignments').select('id').where('call_id', '=', callId).execute()).map((r) => r.id))
  return (res.json().items as Listed[]).filter((a) => ids.has(a.id))
}
const queueOf = (d: Decided, queue: string) => d.decision.assignments.find((a) => a.queue === queue)!

t.test('a repeat caller with an active link: the case-management assignment names the case manager everywhere', async (t) => {
  const personId = 'P-CM-001'
  await link(personId, 'cm-17')
  const desk = await world.key('console', { agencies: ['hastings-pd'], queues: ['case_management'] })
  const s = await stream(bearer(desk))
  t.equal(s.status, 200)

  const decided = await repeatCall(personId)
  t.equal(decided.decision.route, 'case_manager')
  const cm = queueOf(decided, 'case_management')
  const cru = queueOf(decided, 'cru')
  t.ok(cm && cru, 'the case manager, with CRU beside')

  const row = await db.selectFrom('assignments').select(['id', 'case_manager']).where('call_id', '=', decided.callId).execute()
  t.same(Object.fromEntries(row.map((r) => [r.id, r.case_manager])), { [cm.id]: 'cm-17', [cru.id]: null }, 'stored on the case-management assignment only')

  // The job a case-management worker takes, as it finds it in Redis.
  const job = await eventually(() => inspect.case_management.getJob(jobIdFor(cm.id)))
  t.match(job.data, { assignmentId: cm.id, callId: decided.callId, queue: 'case_management', caseManager: 'cm-17' })
  const cruJob = await eventually(() => inspect.cru.getJob(jobIdFor(cru.id)))
  t.notOk('caseManager' in cruJob.data, 'a CRU job carries none')

  const items = await listed(decided.callId)
  t.equal(items.find((a) => a.id === cm.id)?.caseManager, 'cm-17', 'the listing names them')
  t.equal(items.find((a) => a.id === cru.id)?.caseManager, null, 'null on other queues')

  const [event] = await s.waitFor(1)
  const data = feedData(event!) as ReturnType<typeof feedData> & { assignment: { caseManager: string | null } }
  t.equal(data.assignmentId, cm.id, 'the case-management desk hears of its assignment')
  t.equal(data.assignment.caseManager, 'cm-17', 'and the feed names the case manager')

  // The decision records whom it saw: the call's view shows it in the facts, as replay reads them.
  const view = (await app.inject({ method: 'GET', url: `/v1/calls/${decided.callId}` })).json()
  t.match(view.decisions.at(-1).facts.history, { caseManagerActive: true, caseManager: 'cm-17' })
  t.equal(view.assignments.find((a: { id: string }) => a.id === cm.id).caseManager, 'cm-17')
})

t.test('a link changed after the decision does not change the stored assignment', async (t) => {
  const personId = 'P-CM-002'
  await link(personId, 'cm-17')
  const decided = await repeatCall(personId)
  const cm = queueOf(decided, 'case_management')
  await link(personId, 'cm-22')

  // An update of the same call keeps its assignment (and whom it is for); its own decision saw the new link.
  const update = callEvent({ type: 'call.updated', natureCode: 'EDP', personId, callId: decided.callId, occurredAt: new Date(Date.UTC(2026, 10, 23, 16)).toISOString() })
  const updated = await post(update)
  t.equal(queueOf(updated, 'case_management').id, cm.id, 'the same assignment')
  t.equal((await listed(decided.callId)).find((a) => a.id === cm.id)?.caseManager, 'cm-17', 'still the case manager of the decision that made it')
  const job = await eventually(() => inspect.case_management.getJob(jobIdFor(cm.id)))
  t.equal(job.data.caseManager, 'cm-17', 'and its job')
  const view = (await app.inject({ method: 'GET', url: `/v1/calls/${decided.callId}` })).json()
  t.same(
    view.decisions.map((d: { facts: { history: { caseManager?: string } } }) => d.facts.history.caseManager),
    ['cm-17', 'cm-22'],
    'each decision keeps the link it saw',
  )

  // Inactive, or gone: a new call names nobody, and the stored assignment still names cm-17.
  await link(personId, 'cm-22', false)
  const unlinked = await post(callEvent({ natureCode: 'EDP', personId }))
  t.equal(unlinked.decision.route, 'cru')
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/case-links/${personId}` })).statusCode, 204)
  t.equal((await db.selectFrom('assignments').select('case_manager').where('id', '=', cm.id).executeTakeFirstOrThrow()).case_manager, 'cm-17')
})

t.test('a dispatcher override to the case manager without a link names nobody', async (t) => {
  const decided = await post(callEvent({ natureCode: 'EDP', personId: 'P-CM-003', dispatcherOverride: 'case_manager' }))
  t.equal(decided.decision.route, 'case_manager')
  const cm = queueOf(decided, 'case_management')
  t.equal((await listed(decided.callId)).find((a) => a.id === cm.id)?.caseManager, null)
  const job = await eventually(() => inspect.case_management.getJob(jobIdFor(cm.id)))
  t.notOk('caseManager' in job.data, 'the job names nobody either')
})

t.test('a case-management assignment offered again is for the same case manager, whatever the link says by then', async (t) => {
  // A rule set without a fallback for case management: a declined one is offered again in its queue.
  const doc = { ...structuredClone(loadDefaultRuleSet()), version: 2, escalation: { cru: 'co_response' } }
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'case management is offered again' } })).statusCode, 200)
  t.teardown(async () => void (await app.inject({ method: 'POST', url: '/v1/rule-sets/1/activate', payload: { reason: 'back' } })))

  const personId = 'P-CM-004'
  await link(personId, 'cm-17')
  const decided = await repeatCall(personId)
  const cm = queueOf(decided, 'case_management')
  await link(personId, 'cm-99')
  const declined = await app.inject({ method: 'POST', url: `/v1/assignments/${cm.id}/decline`, payload: { reason: 'on leave' } })
  t.equal(declined.statusCode, 200, declined.body)
  const again = (await db.selectFrom('assignments').select(['id', 'queue', 'case_manager']).where('escalated_from', '=', cm.id).execute())
  t.same(again.map((a) => `${a.queue}:${a.case_manager}`), ['case_management:cm-17'], 'offered again, to the case manager the decision saw')
  const job = await eventually(() => inspect.case_management.getJob(jobIdFor(again[0]!.id)))
  t.equal(job.data.caseManager, 'cm-17', 'and its job says so')
})
