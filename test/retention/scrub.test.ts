import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { Queue } from 'bullmq'
import { sql } from 'kysely'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createDb, createPool } from '../../src/db/connect.js'
import { createRedis } from '../../src/queue/redis.js'
import { createRetention } from '../../src/retention/scheduler.js'
import { EVENT_HOLDS_PERSONAL_DATA, ROW_HOLDS_PERSONAL_DATA, scrubPersonalData, TRANSITION_HOLDS_TYPED_TEXT } from '../../src/retention/scrub.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, dropRedisPrefix, eventually, openTransaction, quietLog, running } from '../helpers/world.js'

const world = await createWorld(t)
const { app, db } = world

async function closedCall(natureCode: string, closedDaysAgo: number) {
  const created = callEvent({ natureCode, occurredAt: '2026-01-01T10:00:00Z' })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ type: 'call.closed', callId: created.call.callId, natureCode, occurredAt: '2026-01-01T11:00:00Z', disposition: 'resolved_by_phone' }) })
  const closedAt = new Date(Date.now() - closedDaysAgo * 86_400_000)
  await db.updateTable('calls').set({ closed_at: closedAt, updated_at: closedAt }).where('call_id', '=', created.call.callId).execute()
  return created.call.callId
}

const PERSONAL = ['Marta Lindqvist', '651-555-0142', 'Jonas Ekdahl', '1987-04-12', '1200 Vermillion', 'not wanting to live', '"P-']

t.test('calls older than the retention period lose their personal data and keep their statistics', async (t) => {
  const old = await closedCall('EDP', 120)
  const recent = await closedCall('EDP', 10)
  const open = callEvent({ natureCode: 'NOISE' })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: open })

  const result = await scrubPersonalData(db, new Date(Date.now() - 90 * 86_400_000))
  t.same(result, { calls: 1, events: 2, reasons: 0 })

  const before = await db.selectFrom('calls').select('address_key').where('call_id', '=', recent).executeTakeFirstOrThrow()
  t.ok(before.address_key, 'a call within the period keeps its address key (history)')
  const row = await db.selectFrom('calls').selectAll().where('call_id', '=', old).executeTakeFirstOrThrow()
  t.equal(row.caller, null)
  t.equal(row.address_key, null, 'the address key goes too: a hash of an address is found again from a list of addresses')
  t.equal(row.subject, null)
  t.equal(row.description, null)
  t.equal(row.subject_person_id, null)
  t.same(row.location, { city: 'Hastings' }, 'the city stays for the statistics')
  t.equal(row.nature_code, 'EDP')
  t.equal(row.route, 'cru')
  t.equal(row.mental_health, true)
  t.equal(row.disposition, 'resolved_by_phone')
  const events = await db.selectFrom('call_events').select('body').where('call_id', '=', old).execute()
  const stored = JSON.stringify([row, events])
  for (const v of PERSONAL) t.notOk(stored.includes(v), `"${v}" is gone from the old call`)
  const decisions = await db.selectFrom('decisions').select('id').where('call_id', '=', old).execute()
  t.equal(decisions.length, 2, 'decisions stay')

  const kept = JSON.stringify(await db.selectFrom('calls').selectAll().where('call_id', 'in', [recent, open.call.callId]).execute())
  t.ok(kept.includes('Marta Lindqvist'), 'recent and open calls keep their data')

  t.same(await scrubPersonalData(db, new Date(Date.now() - 90 * 86_400_000)), { calls: 0, events: 0, reasons: 0 }, 'a second run changes nothing')
})

t.test('the scheduled job runs the scrub through BullMQ', async (t) => {
  const old = await closedCall('WELFARE', 200)
  const connection = createRedis(world.config.REDIS_URL, 'worker')
  const retention = await running(createRetention({ db, connection, prefix: world.prefix, retentionDays: 90, everyMs: 60_000, log: quietLog }))
  t.teardown(async () => {
    await retention.close()
    await retention.close()
    connection.disconnect()
  })
  await eventually(async () => (await db.selectFrom('calls').select('caller').where('call_id', '=', old).executeTakeFirstOrThrow()).caller === null, 10_000)
  t.pass('the first run of the schedule scrubbed the old call')
})

/**
 * The retention schedule on a pool whose statements give up after 300 ms, with `table` locked by an
 * open transaction (rolled back by the caller, or at teardown), and its log lines (info and up).
 * The interval is an hour: within a test, only a retry runs again.
 */
async function retentionBehindLock(t: Test, table: 'calls' | 'outbox', name: string) {
  const impatient = createDb(createPool({ connectionString: world.databaseUrl, max: 2, statementTimeoutMs: 300 }))
  const holder = await openTransaction(t, world.pool)
  await holder.query(`lock table ${table} in access exclusive mode`)
  const lines: string[] = []
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, cb) => void (lines.push(String(chunk)), cb()) }))
  const prefix = `${world.prefix}-${name}`
  const connection = createRedis(world.config.REDIS_URL, 'worker')
  const retention = await running(createRetention({ db: impatient, connection, prefix, retentionDays: 90, everyMs: 3600_000, retryMs: 200, log }))
  t.teardown(async () => {
    await retention.close()
    connection.disconnect()
    await impatient.destroy()
    await dropRedisPrefix(world.config.REDIS_URL, prefix)
  })
  return { holder, lines }
}

t.test('a failed run is logged and runs again within the interval', async (t) => {
  const old = await closedCall('EDP', 150)
  // Statements that give up after 300 ms, and the calls table locked: the first run fails.
  const { holder, lines } = await retentionBehindLock(t, 'calls', 'retry')
  await eventually(async () => lines.some((l) => l.includes('retention scrub failed; it runs again shortly')), 10_000)
  t.match(JSON.parse(lines.find((l) => l.includes('retention scrub failed'))!), { attempt: 1, attempts: 3, err: { message: /statement timeout|canceling statement/ } })
  await holder.query('rollback')
  await eventually(async () => (await db.selectFrom('calls').select('caller').where('call_id', '=', old).executeTakeFirstOrThrow()).caller === null, 10_000)
  t.pass('a retry scrubbed the call, an hour before the next interval')
})

t.test('an outbox prune that fails is logged as its own; the scrub is done and not run again', async (t) => {
  const old = await closedCall('EDP', 160)
  const { holder, lines } = await retentionBehindLock(t, 'outbox', 'prune')
  await eventually(async () => lines.some((l) => l.includes('outbox prune failed')), 10_000)
  t.equal((await db.selectFrom('calls').select('caller').where('call_id', '=', old).executeTakeFirstOrThrow()).caller, null, 'the scrub was done')
  await holder.query('rollback')
  await new Promise((r) => setTimeout(r, 500))
  t.notOk(lines.some((l) => l.includes('retention scrub failed')), 'the job did not fail: no scrub runs again for the prune')
  t.equal(lines.filter((l) => l.includes('personal data removed')).length, 1, 'one scrub')
})

t.test('in batches; a call locked elsewhere is left for the next run, not waited for', async (t) => {
  const before = new Date(Date.now() - 90 * 86_400_000)
  const [a, b, locked] = [await closedCall('EDP', 100), await closedCall('WELFARE', 100), await closedCall('EDP', 100)]
  const callerOf = async (id: string) => (await db.selectFrom('calls').select('caller').where('call_id', '=', id).executeTakeFirstOrThrow()).caller
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [locked])

  const started = performance.now()
  t.same(await scrubPersonalData(db, before, { batchSize: 1 }), { calls: 2, events: 4, reasons: 0 }, 'the two others, a batch each')
  // On the monotonic clock: CI's wall clock has jumped seconds mid-run (test/helpers/world.ts).
  t.ok(performance.now() - started < 5_000, 'without waiting for the lock')
  t.equal(await callerOf(a), null)
  t.equal(await callerOf(b), null)
  t.not(await callerOf(locked), null, 'the locked call is untouched')

  await holder.query('rollback')
  t.same(await scrubPersonalData(db, before, { batchSize: 1 }), { calls: 1, events: 2, reasons: 0 }, 'the next run takes it')
  t.equal(await callerOf(locked), null)
})

t.test('an event stored after its call was scrubbed is scrubbed at the next run', async (t) => {
  const before = new Date(Date.now() - 90 * 86_400_000)
  const old = await closedCall('EDP', 120)
  t.same(await scrubPersonalData(db, before), { calls: 1, events: 2, reasons: 0 })
  // CAD sends the close again: kept for the record with its whole body, and the call row stays clean.
  const late = callEvent({ type: 'call.closed', callId: old, occurredAt: '2026-01-01T11:05:00Z', disposition: 'resolved_by_phone' })
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: late })).json().applied, false)

  t.same(await scrubPersonalData(db, before), { calls: 1, events: 1, reasons: 0 })
  const events = await db.selectFrom('call_events').select('body').where('call_id', '=', old).execute()
  t.equal(events.length, 3)
  for (const v of PERSONAL) t.notOk(JSON.stringify(events).includes(v), `"${v}" is gone from the late event`)
  t.same(await scrubPersonalData(db, before), { calls: 0, events: 0, reasons: 0 }, 'then nothing is left')
})

t.test('personal data a later event left out of the call row is scrubbed from the earlier event', async (t) => {
  const created = callEvent({ occurredAt: '2026-01-01T10:00:00Z' })
  await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })
  const { callId, agency, natureCode, priority } = created.call
  // A close that repeats none of it: the row ends up clean, the created event's body does not.
  const close = { ...callEvent({ type: 'call.closed' }), occurredAt: '2026-01-01T11:00:00Z', call: { callId, agency, natureCode, priority, location: { city: 'Hastings' }, disposition: 'resolved_by_phone' } }
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: close })).json().applied, true)
  const closedAt = new Date(Date.now() - 120 * 86_400_000)
  await db.updateTable('calls').set({ closed_at: closedAt, updated_at: closedAt }).where('call_id', '=', callId).execute()

  t.same(await scrubPersonalData(db, new Date(Date.now() - 90 * 86_400_000)), { calls: 1, events: 1, reasons: 0 })
  const events = await db.selectFrom('call_events').select('body').where('call_id', '=', callId).execute()
  for (const v of PERSONAL) t.notOk(JSON.stringify(events).includes(v), `"${v}" is gone from the created event`)
})

t.test('event bodies that hold personal data are found through their partial index, not by reading every body', async (t) => {
  // The scrub's condition must stay the index predicate of migration 0015, or each run reads every old body.
  const plan = await db.transaction().execute(async (trx) => {
    await sql`set local enable_seqscan = off`.execute(trx)
    return (await sql<{ 'QUERY PLAN': string }>`explain select call_id from call_events where ${EVENT_HOLDS_PERSONAL_DATA}`.execute(trx)).rows
  })
  t.match(plan.map((r) => r['QUERY PLAN']).join('\n'), /call_events_personal_idx/)
})

t.test('call rows that hold personal data are found through their partial index, not by walking every call', async (t) => {
  // A batch's selection, as scrubBatch orders and limits it: the index's predicate must stay the scrub's.
  const plan = await db.transaction().execute(async (trx) => {
    await sql`set local enable_seqscan = off`.execute(trx)
    return (await sql<{ 'QUERY PLAN': string }>`explain select call_id from calls where ${ROW_HOLDS_PERSONAL_DATA} order by call_id limit 500`.execute(trx)).rows
  })
  t.match(plan.map((r) => r['QUERY PLAN']).join('\n'), /calls_personal_idx/)
})

// A CRU desk declines with words about the person, and police acknowledge with some of their own.
// Non-ASCII and an emoji, because Postgres counts characters where JavaScript counts UTF-16 units.
const DECLINED = 'spoke with her sister Åsa 🙂 — she is with Jonas tonight'
const ACKNOWLEDGED = 'on scene 🚓 with Marta'

type Transition = { from: string | null; to: string; reason: string | null }
type Assignment = { id: string; queue: string; role: string; transitions: Transition[] }

async function callWithTypedReasons(daysAgo: number, close = true) {
  const created = callEvent({ natureCode: 'EDP', occurredAt: '2026-01-01T10:00:00Z' })
  const cru = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).json().decision.assignments[0].id as string
  const callId = created.call.callId
  await moved(cru, 'decline', DECLINED)
  const police = (await assignmentsOf(callId)).find((a) => a.queue === 'police')!
  await moved(police.id, 'acknowledge', ACKNOWLEDGED)
  if (close) await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ type: 'call.closed', callId, natureCode: 'EDP', occurredAt: '2026-01-01T11:00:00Z', disposition: 'field_response' }) })
  const at = new Date(Date.now() - daysAgo * 86_400_000)
  await db.updateTable('calls').set({ closed_at: close ? at : null, updated_at: at }).where('call_id', '=', callId).execute()
  return { callId, cru, police: police.id }
}

async function moved(id: string, action: string, reason: string) {
  const res = await app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}`, payload: { reason } })
  if (res.statusCode !== 200) throw new Error(`${action} answered ${res.statusCode}: ${res.body}`)
}

async function assignmentsOf(callId: string): Promise<Assignment[]> {
  return (await app.inject({ method: 'GET', url: `/v1/calls/${callId}` })).json().assignments
}

t.test('the words consoles typed on moves go; the service’s own reasons stay', async (t) => {
  const before = new Date(Date.now() - 90 * 86_400_000)
  const old = await callWithTypedReasons(120)
  const recent = await callWithTypedReasons(10)
  const typedBefore = JSON.stringify(await assignmentsOf(old.callId))
  t.ok(typedBefore.includes(DECLINED) && typedBefore.includes(ACKNOWLEDGED), 'the history shows both while the call is within the period')

  t.match(await scrubPersonalData(db, before), { calls: 1, reasons: 2 })
  const history = await assignmentsOf(old.callId)
  const stored = JSON.stringify([history, await db.selectFrom('assignment_transitions').select('reason').execute()])
  for (const v of ['Åsa', 'sister', 'Jonas', 'Marta', '🙂', '🚓']) t.notOk(JSON.stringify(history).includes(v), `"${v}" is gone from the old call's history`)
  const declined = history.find((a) => a.id === old.cru)!.transitions.at(-1)!
  t.match(declined.reason, /^declined: \[removed\]; escalated to co_response; new: police primary, cru support$/, 'exactly the typed words are replaced')
  const police = history.find((a) => a.id === old.police)!.transitions
  t.equal(police.find((x) => x.to === 'acknowledged')!.reason, '[removed]')
  t.equal(police[0]!.reason, `escalated from cru assignment ${old.cru} (declined)`, 'the service’s explanation is untouched')

  t.ok(stored.includes(DECLINED) && stored.includes(ACKNOWLEDGED), 'the recent call keeps its words')
  const recentHistory = JSON.stringify(await assignmentsOf(recent.callId))
  t.ok(recentHistory.includes(`declined: ${DECLINED}; escalated to co_response`) && recentHistory.includes(ACKNOWLEDGED))
  t.same(await scrubPersonalData(db, before), { calls: 0, events: 0, reasons: 0 }, 'a second run changes nothing')
})

t.test('a reason typed after the call was scrubbed is removed at the next run', async (t) => {
  const before = new Date(Date.now() - 90 * 86_400_000)
  // An open call nobody has touched for the period: scrubbed, though its assignments are still open.
  const { callId, police } = await callWithTypedReasons(100, false)
  t.match(await scrubPersonalData(db, before), { calls: 1, reasons: 2 })
  await moved(police, 'accept', 'Jonas let us in')

  t.same(await scrubPersonalData(db, before), { calls: 1, events: 0, reasons: 1 }, 'found through the transitions, though the call row is clean')
  const accepted = (await assignmentsOf(callId)).find((a) => a.id === police)!.transitions.find((x) => x.to === 'accepted')!
  t.equal(accepted.reason, '[removed]')
  t.same(await scrubPersonalData(db, before), { calls: 0, events: 0, reasons: 0 })
})

t.test('the typed words of scrubbed calls are walked in slices, past what is not due or locked', async (t) => {
  const before = new Date(Date.now() - 90 * 86_400_000)
  // First in the index: a recent call's words (not due) and a locked one's; after them, three old calls'.
  const recent = await callWithTypedReasons(10, false)
  const locked = await callWithTypedReasons(100, false)
  const old = [await callWithTypedReasons(100, false), await callWithTypedReasons(100, false), await callWithTypedReasons(100, false)]
  // Their rows clean already, as after an earlier run: only the transitions hold the words.
  await db.updateTable('calls').set({ caller: null, subject: null, description: null, subject_person_id: null, address_key: null, location: null }).where('call_id', 'in', [locked, ...old].map((c) => c.callId)).execute()
  await db.updateTable('call_events').set({ body: sql`body #- '{call,caller}' #- '{call,subject}' #- '{call,description}' #- '{call,location}'` }).where('call_id', 'in', [locked, ...old].map((c) => c.callId)).execute()
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [locked.callId])

  t.same(await scrubPersonalData(db, before, { batchSize: 1 }), { calls: 3, events: 0, reasons: 6 }, 'the three old calls, one slice at a time')
  const typed = async (c: { callId: string }) => JSON.stringify(await assignmentsOf(c.callId)).includes(ACKNOWLEDGED)
  for (const c of old) t.notOk(await typed(c))
  t.ok(await typed(recent), 'the recent call keeps its words')
  t.ok(await typed(locked), 'the locked call is passed over…')
  await holder.query('rollback')
  t.same(await scrubPersonalData(db, before, { batchSize: 1 }), { calls: 1, events: 0, reasons: 2 }, '…and taken at the next run')
  t.notOk(await typed(locked))
})

t.test('transitions that hold typed words are found through their partial index', async (t) => {
  const plan = await db.transaction().execute(async (trx) => {
    await sql`set local enable_seqscan = off`.execute(trx)
    // A slice, as the third pass walks them.
    return (await sql<{ 'QUERY PLAN': string }>`explain select id from assignment_transitions where ${TRANSITION_HOLDS_TYPED_TEXT} and id > 0 order by id limit 500`.execute(trx)).rows
  })
  t.match(plan.map((r) => r['QUERY PLAN']).join('\n'), /assignment_transitions_typed_idx/)
})

t.test('a retention schedule that Redis lost (restarted empty) is put back by the worker', async (t) => {
  const prefix = `${world.prefix}-lost-schedule`
  const connection = createRedis(world.config.REDIS_URL, 'worker')
  const queue = new Queue('maintenance', { connection, prefix })
  // A short interval, so the test waits a few of them at most.
  const lines: string[] = []
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, cb) => void (lines.push(String(chunk)), cb()) }))
  const retention = await running(createRetention({ db, connection, prefix, retentionDays: 90, everyMs: 200, log }))
  t.teardown(async () => {
    await retention.close()
    await queue.close()
    connection.disconnect()
    await dropRedisPrefix(world.config.REDIS_URL, prefix)
  })
  t.ok(await queue.getJobScheduler('retention-scrub'), 'scheduled at start')
  // Gone, as after a Redis that came back empty. (Not asserted gone: the 200 ms check may already
  // have put it back; its warning says it did.)
  await queue.removeJobScheduler('retention-scrub')
  await eventually(async () => lines.some((l) => l.includes('retention scrub schedule was missing')), 10_000)
  t.ok(await queue.getJobScheduler('retention-scrub'), 'restored: personal data keeps being removed without a restart of the worker')
})
