import { sql } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import { buildApp } from '../../src/app.js'
import { countEscalations, createMetrics, observeWorkers } from '../../src/metrics/metrics.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, eventually, openTransaction, PG_ADMIN_URL } from '../helpers/world.js'

const world = await createWorld(t)

/** The value of one sample in the exposition text, 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return 0
}
const scrape = async (app = world.app) => {
  const res = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${world.adminKey}` } })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  return res.body
}

/** A mental-health call made a minute ago and closed now: its follow-up (reserved for later), as the close answered it. */
async function closedMentalHealthCall(t: Test): Promise<{ id: string; status: string }> {
  const created = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: new Date(Date.now() - 60_000).toISOString() })
  t.equal((await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: created })).statusCode, 201)
  const closed = callEvent({ type: 'call.closed', callId: created.call.callId, natureCode: 'EDP', flags: { mentalHealth: true }, disposition: 'resolved', occurredAt: new Date().toISOString() })
  const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: closed })
  t.equal(res.statusCode, 201, res.body)
  return res.json().decision.assignments.find((a: { queue: string }) => a.queue === 'follow_up')
}

t.test('metrics move with decisions, requests and waiting assignments', async (t) => {
  const before = await scrape()
  t.equal(sample(before, 'cad_router_queue_depth', { queue: 'cru' }), 0)
  t.match(before, /# TYPE cad_router_http_request_duration_seconds histogram/)
  t.match(before, /cad_router_process_cpu_user_seconds_total/, 'process metrics too')

  // An EDP call with CRU on duty goes to CRU (rule 3); no relay runs here, so its assignment waits in Postgres.
  const event = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: new Date().toISOString() })
  const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: event })
  t.equal(res.statusCode, 201, res.body)
  const decision = res.json().decision
  // The same event again is a repeat, not a new decision.
  await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: event })

  // Made to have waited a minute and a half: the ages must read that, not just any number.
  await sql`update outbox set created_at = created_at - interval '90 seconds' where sent_at is null`.execute(world.db)
  await sql`update assignments set created_at = created_at - interval '90 seconds' where call_id = ${event.call.callId}`.execute(world.db)

  const after = await scrape()
  t.equal(sample(after, 'cad_router_decisions_total', { route: decision.route, rule: decision.ruleId }), 1, 'one decision counted')
  t.equal(sample(after, 'cad_router_http_requests_total', { route: '/v1/call-events', status: '201' }), 1)
  t.equal(sample(after, 'cad_router_http_requests_total', { route: '/v1/call-events', status: '200' }), 1)
  t.equal(sample(after, 'cad_router_http_request_duration_seconds_count', { route: '/v1/call-events' }), 2)
  const primary = decision.assignments.find((a: { role: string }) => a.role === 'primary').queue
  t.equal(sample(after, 'cad_router_queue_depth', { queue: primary }), 1, `${primary} queue depth`)
  const waited = sample(after, 'cad_router_queue_oldest_age_seconds', { queue: primary })
  t.ok(waited >= 90 && waited < 150, `the ${primary} assignment has waited about 90 s (${waited})`)
  t.equal(sample(after, 'cad_router_outbox_pending'), decision.assignments.length, 'not relayed: pending in the outbox')
  const lag = sample(after, 'cad_router_outbox_lag_seconds')
  t.ok(lag >= 90 && lag < 150, `the outbox lag is the oldest unsent row's age, about 90 s (${lag})`)
  t.match(after, /cad_router_follow_ups_overdue 0/)
  t.match(after, /cad_router_escalation_records\{queue="cru",status="escalated"\} 0/)
  // Ids never become labels: the route template is used, not the URL.
  await world.app.inject({ url: `/v1/calls/${event.call.callId}` })
  const third = await scrape()
  t.equal(sample(third, 'cad_router_http_requests_total', { route: '/v1/calls/:callId', status: '200' }), 1)
  t.notMatch(third, event.call.callId)
})

t.test('each app has its own registry: a second app in the same process starts at zero', async (t) => {
  const other = await buildApp({ config: world.config, db: world.db, redis: world.redis, ruleSets: world.ruleSets, logger: world.app.log })
  t.teardown(() => other.close())
  const text = await scrape(other)
  t.equal(sample(text, 'cad_router_http_requests_total', { route: '/v1/call-events' }), 0)
  t.match(text, /cad_router_decisions_total/)
})

t.test('worker errors and failed jobs are counted per queue', async (t) => {
  const metrics = createMetrics()
  // Stand-ins for BullMQ workers: only their events matter here.
  const cru = Object.assign(new EventEmitter(), { name: 'cru' })
  observeWorkers([cru], metrics)
  cru.emit('failed')
  cru.emit('failed')
  cru.emit('error')
  const text = await metrics.registry.metrics()
  t.equal(sample(text, 'cad_router_worker_errors_total', { queue: 'cru', kind: 'job_failed' }), 2)
  t.equal(sample(text, 'cad_router_worker_errors_total', { queue: 'cru', kind: 'error' }), 1)
})

t.test('escalation records: counted as they commit, each once, however the scrapes fall', async (t) => {
  const esc = (text: string, queue: string, status: string) => sample(text, 'cad_router_escalation_records', { queue, status })
  // A scrape whose cru count for `status` is `n`, scraping again for up to 5 s: any other write
  // transaction of this database open at that moment delays a count (never loses or doubles one).
  const scrapeUntil = (status: string, n: number) =>
    eventually(async () => {
      const text = await scrape()
      return esc(text, 'cru', status) === n && text
    }, 5000).catch(async () => scrape())
  // A CRU call declined at the console escalates along the fallback: one record, under cru.
  const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: new Date().toISOString() }) })
  t.equal(res.statusCode, 201, res.body)
  const cru = res.json().decision.assignments.find((a: { queue: string }) => a.queue === 'cru')
  t.ok(cru, 'routed to CRU')
  const before = await scrape()
  // A write transaction open in another database of the server (another test file, another
  // service), older than the decline, holds nothing back: the horizon is this database's.
  const elsewhere = new pg.Client({ connectionString: PG_ADMIN_URL })
  await elsewhere.connect()
  t.teardown(() => elsewhere.end())
  await elsewhere.query('begin')
  await elsewhere.query('select pg_current_xact_id()')
  const declined = await world.app.inject({ method: 'POST', url: `/v1/assignments/${cru.id}/decline`, payload: { reason: 'unit busy' } })
  t.equal(declined.statusCode, 200, declined.body)
  t.equal(esc(await scrapeUntil('declined', esc(before, 'cru', 'declined') + 1), 'cru', 'declined'), esc(before, 'cru', 'declined') + 1, 'the decline counted, with a write transaction open in another database')
  await elsewhere.query('rollback')

  // Rows are numbered at insert and seen at commit, in another order. Transaction A writes a record
  // first and stays open; B writes one after it and commits. A scrape now must not move past A's row,
  // as counting by row id would (B's higher id seen, A's lower one never counted).
  const record = (status: string) => sql`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason)
    values (${cru.id}, 'offered', ${status}, 'primary', 'test', 'metrics test')`
  /** The same record, written on a connection with a transaction of its own open. */
  const recordOn = async (client: pg.PoolClient, status: string) => {
    const q = record(status).compile(world.db)
    await client.query(q.sql, [...q.parameters])
  }
  const a = await openTransaction(t, world.pool)
  await recordOn(a, 'expired')
  await record('expired').execute(world.db)
  const whileOpen = await scrape()
  t.equal(esc(whileOpen, 'cru', 'expired'), esc(before, 'cru', 'expired'), 'neither counted while A is open: B is written after A began')
  await a.query('commit')
  t.equal(esc(await scrapeUntil('expired', esc(before, 'cru', 'expired') + 2), 'cru', 'expired'), esc(before, 'cru', 'expired') + 2, 'both counted once A committed')

  // Scrapes at the same time count a new record once between them.
  await record('escalated').execute(world.db)
  const both = await Promise.all([scrape(), scrape(), scrape()])
  const last = await scrapeUntil('escalated', esc(before, 'cru', 'escalated') + 1)
  t.equal(esc(last, 'cru', 'escalated'), esc(before, 'cru', 'escalated') + 1, 'counted once by three scrapes at once')
  for (const text of both) t.ok(esc(text, 'cru', 'escalated') <= esc(last, 'cru', 'escalated'), 'no scrape counted it twice')
  t.equal(esc(await scrape(), 'cru', 'escalated'), esc(last, 'cru', 'escalated'), 'and no later scrape again')

  // Records written inside savepoints (subtransactions, ids of their own) are held back by their
  // transaction as a whole: one rolled back is gone, one released counts when the transaction
  // commits, and a record committed meanwhile by a later transaction waits for it too.
  const sp = await openTransaction(t, world.pool)
  await sp.query('select pg_current_xact_id()')
  await sp.query('savepoint s')
  await recordOn(sp, 'escalated')
  await sp.query('rollback to savepoint s')
  await sp.query('savepoint s2')
  await recordOn(sp, 'escalated')
  await sp.query('release savepoint s2')
  await record('escalated').execute(world.db)
  t.equal(esc(await scrape(), 'cru', 'escalated'), esc(last, 'cru', 'escalated'), 'nothing counted while the savepoints’ transaction is open')
  await sp.query('commit')
  const afterSavepoint = await scrapeUntil('escalated', esc(last, 'cru', 'escalated') + 2)
  t.equal(esc(afterSavepoint, 'cru', 'escalated'), esc(last, 'cru', 'escalated') + 2, 'the released savepoint’s record and the later one, once each')

  // Transaction ids lower than the last horizon (a restore into another cluster): counted again
  // from the start, not added to what was counted before.
  const tally = createMetrics().escalationTally
  await countEscalations(world.db, tally)
  const settled = new Map(tally.counts)
  tally.below = '999999999999'
  tally.counts.set('cru/expired', 1_000_000)
  t.same(new Map(await countEscalations(world.db, tally)), settled, 'recounted from nothing')

  // A process started now counts everything once, and agrees.
  const other = await buildApp({ config: world.config, db: world.db, redis: world.redis, ruleSets: world.ruleSets, logger: world.app.log })
  t.teardown(() => other.close())
  const fresh = await scrape(other)
  for (const status of ['declined', 'expired', 'escalated']) t.equal(esc(fresh, 'cru', status), esc(afterSavepoint, 'cru', status), `a new process reads the same ${status} count`)
  const counted = await world.db
    .selectFrom('assignment_transitions')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('feed_queue', '=', 'cru')
    .where('to_status', '=', 'expired')
    .executeTakeFirstOrThrow()
  t.equal(esc(fresh, 'cru', 'expired'), Number(counted.n), 'the table agrees')
})

t.test('overdue follow-ups: an open one past due counts, one that ended never does', async (t) => {
  const overdue = async () => sample(await scrape(), 'cad_router_follow_ups_overdue')
  const base = await overdue()
  const fu = await closedMentalHealthCall(t)
  t.ok(fu, 'the closed mental-health call has a follow-up')
  t.equal(await overdue(), base, 'not due yet')

  await world.db.updateTable('assignments').set({ due_at: new Date(Date.now() - 3600_000) }).where('id', '=', fu.id).execute()
  t.equal(await overdue(), base + 1, 'open past its due time: overdue')
  // Ended by escalation (a rule set may hand follow-ups on), it is no longer the one to watch. The
  // gauge once counted every status but four, this one included, for ever.
  for (const status of ['escalated', 'expired', 'completed', 'cancelled', 'declined']) {
    await world.db.updateTable('assignments').set({ status }).where('id', '=', fu.id).execute()
    t.equal(await overdue(), base, `${status}: not overdue`)
  }
})

t.test('an escalation count that fails leaves the other gauges to the scrape, and is counted as a scrape error', async (t) => {
  const metrics = createMetrics()
  const app = await buildApp({ config: world.config, db: world.db, redis: world.redis, ruleSets: world.ruleSets, logger: world.app.log, metrics })
  t.teardown(() => app.close())
  const first = await scrape(app)
  const declined = sample(first, 'cad_router_escalation_records', { queue: 'cru', status: 'declined' })
  // The count's next query carries a transaction id Postgres refuses, as a first count past the
  // statement timeout would fail.
  metrics.escalationTally.below = 'not an id'
  const event = callEvent({ natureCode: 'EDP', flags: { mentalHealth: true }, occurredAt: new Date().toISOString() })
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: event, headers: { authorization: `Bearer ${world.adminKey}` } })
  t.equal(res.statusCode, 201, res.body)
  const queue = res.json().decision.assignments.find((a: { role: string }) => a.role === 'primary').queue
  const second = await scrape(app)
  t.equal(sample(second, 'cad_router_metrics_scrape_errors_total'), 1, 'the failed count is a scrape error')
  t.equal(sample(second, 'cad_router_queue_depth', { queue }), sample(first, 'cad_router_queue_depth', { queue }) + 1, 'the queue depth still moved')
  t.equal(sample(second, 'cad_router_escalation_records', { queue: 'cru', status: 'declined' }), declined, 'the escalation gauges keep their values')
})

t.test('queue age: a reserved follow-up waits from its reservedUntil, not from its creation', async (t) => {
  // A follow-up is reserved for FOLLOW_UP_DUE_HOURS after the close. Counted from its creation, the
  // follow_up queue's oldest age grew through every reservation, and an alert on it meant nothing.
  const fu = await closedMentalHealthCall(t)
  t.equal(fu?.status, 'reserved')
  // Every other open follow-up of this file out of the way, so the queue's figures are this one's.
  await world.db.updateTable('assignments').set({ status: 'cancelled' }).where('queue', '=', 'follow_up').where('id', '<>', fu.id).where('status', 'in', ['reserved', 'queued', 'offered']).execute()
  // Made two hours ago, offerable in a day.
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000)
  // (created_at is not updatable through the typed schema: the row's birth is set once.)
  await sql`update assignments set created_at = ${twoHoursAgo}, reserved_until = ${new Date(Date.now() + 24 * 3600_000)} where id = ${fu.id}`.execute(world.db)
  const queues = async () => (await world.app.inject({ url: '/v1/reports/queues' })).json().queues.find((q: { queue: string }) => q.queue === 'follow_up')

  let text = await scrape()
  t.equal(sample(text, 'cad_router_queue_depth', { queue: 'follow_up' }), 1, 'it is in the queue')
  t.equal(sample(text, 'cad_router_queue_oldest_age_seconds', { queue: 'follow_up' }), 0, 'but waits for nobody yet')
  t.match(await queues(), { waiting: 1, oldestAgeSeconds: 0 })

  // Offerable ten minutes ago and not offered yet (no worker runs here): it has waited ten minutes.
  await world.db.updateTable('assignments').set({ reserved_until: new Date(Date.now() - 600_000) }).where('id', '=', fu.id).execute()
  text = await scrape()
  const age = sample(text, 'cad_router_queue_oldest_age_seconds', { queue: 'follow_up' })
  t.ok(age >= 600 && age < 900, `ten minutes, not two hours: ${age} s`)
  const report = await queues()
  t.ok(report.oldestAgeSeconds >= 600 && report.oldestAgeSeconds < 900, `the report agrees: ${report.oldestAgeSeconds} s`)

  // Offered at last (as the worker moves it: reserved → offered, reservedUntil kept) and not yet
  // acknowledged: it has still waited ten minutes, not the two hours since its creation.
  await world.db.updateTable('assignments').set({ status: 'offered' }).where('id', '=', fu.id).execute()
  text = await scrape()
  const offeredAge = sample(text, 'cad_router_queue_oldest_age_seconds', { queue: 'follow_up' })
  t.ok(offeredAge >= 600 && offeredAge < 900, `offered, still ten minutes, not two hours: ${offeredAge} s`)
  const offeredReport = await queues()
  t.ok(offeredReport.oldestAgeSeconds >= 600 && offeredReport.oldestAgeSeconds < 900, `the report agrees: ${offeredReport.oldestAgeSeconds} s`)
})
