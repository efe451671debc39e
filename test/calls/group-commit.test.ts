/**
 * Group commit (src/calls/group-commit.ts, src/calls/service.ts): events that arrive together share
 * one transaction, and each is still answered, stored and decided exactly as if it had come alone.
 */
import t from 'tap'
import { createGroupCommit, type Settlement } from '../../src/calls/group-commit.js'
import { callEventSchema } from '../../src/calls/schemas.js'
import { createCallService, type IngestOutcome } from '../../src/calls/service.js'
import { sql } from 'kysely'
import { createDb, createPool } from '../../src/db/connect.js'
import { isUnavailableError, type AppError } from '../../src/http/errors.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, eventually, openTransaction } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

const world = await createWorld(t)
const { app, db } = world

/** A service of its own over the world's database, recording the size of every batch it runs. */
function service(opts: { concurrency?: number; maxSize?: number } = {}) {
  const sizes: number[] = []
  const calls = createCallService({
    db,
    ruleSets: world.ruleSets,
    followUpDeadlineHours: 72,
    batch: { concurrency: opts.concurrency ?? 1, maxSize: opts.maxSize ?? 32, onBatch: (n) => sizes.push(n) },
  })
  // As the route hands it over: parsed, defaults filled in.
  return { calls: { ingest: (e: unknown, scope: { mayTouchAgency?: (a: string) => boolean } = {}) => calls.ingest(callEventSchema.parse(e), scope) }, sizes }
}

const settled = (ps: Promise<IngestOutcome>[]) => Promise.allSettled(ps)
const decisionsOf = (eventId: string) => db.selectFrom('decisions').select(['id']).where('event_id', '=', eventId).execute()

t.test('the batcher: one batch for what arrives together, keys serialised in order, failures isolated', async (t) => {
  const runs: string[][] = []
  const gc = createGroupCommit<{ key: string; id: string; bad?: boolean }, string>({
    keys: (i) => [i.key],
    maxBatch: 3,
    concurrency: 1,
    maxQueued: 8,
    overloaded: () => new Error('overloaded'),
    run: async (items) => {
      runs.push(items.map((i) => i.id))
      // A batch holding the bad item fails as a whole; alone, only the bad item fails.
      if (items.some((i) => i.bad)) return items.length > 1 ? items.map(() => ({ retry: true, alone: true })) : [{ error: new Error('bad') }]
      return items.map((i): Settlement<string> => ({ value: i.id }))
    },
  })
  const out = await Promise.allSettled([
    gc.submit({ key: 'a', id: 'a1' }),
    gc.submit({ key: 'b', id: 'b1' }),
    gc.submit({ key: 'a', id: 'a2' }),
    gc.submit({ key: 'c', id: 'c1', bad: true }),
    gc.submit({ key: 'd', id: 'd1' }),
  ])
  t.same(
    out.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as Error).message)),
    ['a1', 'b1', 'a2', 'bad', 'd1'],
    'every item answered with its own result',
  )
  t.same(runs[0], ['a1', 'b1', 'c1'], 'the first batch: everything at hand, a2 held back behind a1, at most maxBatch')
  t.ok(
    runs.findIndex((r) => r.includes('a2')) > runs.findIndex((r) => r.includes('a1')),
    'a2 runs after a1 (same key, arrival order)',
  )
  t.ok(runs.some((r) => r.length === 1 && r[0] === 'c1'), 'the failing item ran alone')
  t.ok(runs.some((r) => r.length === 1 && r[0] === 'b1'), 'so did the good ones of its batch, and they succeeded')

  const flood = Array.from({ length: 12 }, (_, i) => gc.submit({ key: `k${i}`, id: `f${i}` }))
  const floodOut = await Promise.allSettled(flood)
  t.equal(floodOut.filter((o) => o.status === 'rejected' && (o.reason as Error).message === 'overloaded').length, 4, 'beyond maxQueued: refused at once')
})

t.test('the batcher holds a second batch back while the one in flight is young, unless a full batch could start', async (t) => {
  /** A batcher whose batches run until released; `started` lists each batch's items and start time. */
  const batcher = (holdMs: number) => {
    const started: { ids: string[]; at: number }[] = []
    const release: (() => void)[] = []
    const gc = createGroupCommit<{ key: string; id: string }, string>({
      keys: (i) => [i.key],
      maxBatch: 4,
      concurrency: 2,
      holdMs,
      maxQueued: 100,
      overloaded: () => new Error('overloaded'),
      run: async (items) => {
        started.push({ ids: items.map((i) => i.id), at: performance.now() })
        await new Promise<void>((r) => release.push(r))
        return items.map((i): Settlement<string> => ({ value: i.id }))
      },
    })
    const submit = (...ids: string[]) => ids.map((id) => gc.submit({ key: id, id }))
    const until = async (n: number, what: string) => {
      for (const end = Date.now() + 5000; started.length < n; await new Promise((r) => setTimeout(r, 5))) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    }
    const releaseAll = () => release.splice(0).forEach((r) => r())
    return { started, submit, until, releaseAll }
  }

  // A hold longer than the test: only what the code does, not the clock, decides.
  const long = batcher(60_000)
  const first = long.submit('a')
  await long.until(1, 'a')
  const gathered = long.submit('b', 'c')
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
  t.equal(long.started.length, 1, 'arrivals beside a young batch wait')
  long.releaseAll()
  await long.until(2, 'b and c')
  t.same(long.started[1]!.ids, ['b', 'c'], 'and gather into the next batch')
  const full = long.submit('d', 'e', 'f', 'g')
  await long.until(3, 'a full batch')
  t.same(long.started[2]!.ids, ['d', 'e', 'f', 'g'], 'a full batch (maxBatch) starts beside a young one at once')
  long.releaseAll()
  t.same(await Promise.all([...first, ...gathered, ...full]), ['a', 'b', 'c', 'd', 'e', 'f', 'g'], 'every item answered')

  // A short hold ends by itself: a second transaction opens beside a batch that is stuck.
  const short = batcher(100)
  const t0 = performance.now()
  const stuck = short.submit('s')
  await short.until(1, 's')
  const beside = short.submit('x')
  await short.until(2, 'x beside the stuck batch')
  t.same(short.started[1]!.ids, ['x'])
  t.ok(short.started[1]!.at - t0 >= 100, 'once the stuck batch had run holdMs')
  short.releaseAll()
  t.same(await Promise.all([...stuck, ...beside]), ['s', 'x'])
})

t.test('events posted together share a transaction and each gets its own stored decision', async (t) => {
  const { calls, sizes } = service()
  const events = Array.from({ length: 20 }, (_, i) => callEvent({ natureCode: i % 2 ? 'EDP' : 'NOISE' }))
  const out = await Promise.all(events.map((e) => calls.ingest(e)))
  t.ok(sizes.some((n) => n > 1), `batched (${sizes.join(', ')})`)
  for (const [i, o] of out.entries()) {
    t.equal(o.created, true)
    t.equal(o.result.eventId, events[i]!.eventId, 'each caller gets the answer for its own event')
    t.equal(o.result.decision.route, i % 2 ? 'cru' : 'police')
    const stored = await db.selectFrom('decisions').select(['id', 'route']).where('event_id', '=', events[i]!.eventId).execute()
    t.same(stored, [{ id: o.result.decision.id, route: o.result.decision.route }])
    const queued = await db.selectFrom('outbox').select('assignment_id').where('assignment_id', 'in', o.result.decision.assignments.map((a) => a.id)).execute()
    t.equal(queued.length, o.result.decision.assignments.length, 'every new assignment has its outbox row')
  }
})

t.test('a batch mixes new, stale, closed-call and repeated events: each is answered as if alone', async (t) => {
  const { calls } = service()
  const open = callEvent({ natureCode: 'EDP' })
  const closed = callEvent({ natureCode: 'NOISE' })
  await calls.ingest(open)
  await calls.ingest(closed)
  await calls.ingest({ ...closed, eventId: `${closed.eventId}-c`, type: 'call.closed', occurredAt: new Date(Date.parse(closed.occurredAt) + 60_000).toISOString() })

  const fresh = callEvent({ natureCode: 'OD', flags: { medicalEmergency: true } })
  const stale = { ...open, eventId: `${open.eventId}-old`, type: 'call.updated' as const, occurredAt: new Date(Date.parse(open.occurredAt) - 60_000).toISOString() }
  const afterClose = { ...closed, eventId: `${closed.eventId}-u`, type: 'call.updated' as const, occurredAt: new Date(Date.parse(closed.occurredAt) + 120_000).toISOString() }
  const conflict = { ...open, call: { ...open.call, priority: 1 } }
  const [a, b, c, d, e] = (await settled([calls.ingest(fresh), calls.ingest(stale), calls.ingest(afterClose), calls.ingest(open), calls.ingest(conflict)])).map((o) =>
    o.status === 'fulfilled' ? { ok: o.value } : { code: (o.reason as AppError).code },
  ) as [{ ok?: IngestOutcome; code?: string }, { ok?: IngestOutcome; code?: string }, { ok?: IngestOutcome; code?: string }, { ok?: IngestOutcome; code?: string }, { ok?: IngestOutcome; code?: string }]

  t.equal(a.ok?.created && a.ok.result.decision.route, 'ems', 'the new call is routed')
  t.equal(b.ok?.created && b.ok.result.applied, false, 'the stale event is stored, not applied')
  t.equal(b.ok?.result.decision.route, 'cru', 'and answered with the call’s current decision')
  t.equal(c.code, 'call-closed')
  t.equal(d.ok?.created, false, 'the exact repeat is answered from what is stored')
  t.equal(e.code, 'event-conflict')

  const stored = await db.selectFrom('call_events').select(['event_id', 'applied']).where('event_id', 'in', [fresh.eventId, stale.eventId, afterClose.eventId]).execute()
  t.same(
    stored.sort((x, y) => x.event_id.localeCompare(y.event_id)),
    [
      { event_id: fresh.eventId, applied: true },
      { event_id: stale.eventId, applied: false },
    ].sort((x, y) => x.event_id.localeCompare(y.event_id)),
    'the event refused for a closed call left nothing behind',
  )
})

t.test('a late close shares a batch with updates and closes of other calls: each call gets what its event says', async (t) => {
  const { calls, sizes } = service()
  const late = callEvent({ natureCode: 'EDP' })
  const updated = callEvent({ natureCode: 'EDP' })
  const closing = callEvent({ natureCode: 'EDP' })
  for (const e of [late, updated, closing]) await calls.ingest(e)
  const plus = (e: { occurredAt: string }, ms: number) => new Date(Date.parse(e.occurredAt) + ms).toISOString()
  await calls.ingest({ ...late, eventId: `${late.eventId}-u`, type: 'call.updated', occurredAt: plus(late, 60_000), call: { ...late.call, priority: 1 } })
  sizes.length = 0

  const [a, b, c] = await Promise.all([
    calls.ingest({ ...late, eventId: `${late.eventId}-c`, type: 'call.closed', occurredAt: plus(late, 58_000), call: { ...late.call, disposition: 'resolved_by_phone' } }),
    calls.ingest({ ...updated, eventId: `${updated.eventId}-u`, type: 'call.updated', occurredAt: plus(updated, 60_000), call: { ...updated.call, priority: 1 } }),
    calls.ingest({ ...closing, eventId: `${closing.eventId}-c`, type: 'call.closed', occurredAt: plus(closing, 60_000), call: { ...closing.call, disposition: 'no_contact' } }),
  ])
  t.same(sizes, [3], 'one batch')
  t.ok(a.result.applied && b.result.applied && c.result.applied)
  const rows = await db
    .selectFrom('calls')
    .select(['call_id', 'status', 'priority', 'disposition', 'last_occurred_at'])
    .where('call_id', 'in', [late.call.callId, updated.call.callId, closing.call.callId])
    .execute()
  const row = (id: string) => rows.find((r) => r.call_id === id)!
  t.match(row(late.call.callId), { status: 'closed', priority: 1, disposition: 'resolved_by_phone', last_occurred_at: new Date(plus(late, 60_000)) }, 'closed, keeping the later update')
  t.match(row(updated.call.callId), { status: 'open', priority: 1, disposition: null })
  t.match(row(closing.call.callId), { status: 'closed', priority: 2, disposition: 'no_contact' })
})

t.test('a repeat whose body names another call is a 409 and creates no call, in a batch with a new event', async (t) => {
  const { calls, sizes } = service()
  const first = callEvent({ natureCode: 'EDP' })
  await calls.ingest(first)
  const elsewhere = { ...first, call: { ...first.call, callId: `${first.call.callId}-elsewhere` } }
  const fresh = callEvent({ natureCode: 'NOISE' })
  const before = sizes.length
  const answers = (await settled([calls.ingest(fresh), calls.ingest(elsewhere)])).map((o) => (o.status === 'fulfilled' ? o.value.created : (o.reason as AppError).code))
  t.same(sizes.slice(before), [2], 'both ran in one batch')
  t.same(answers, [true, 'event-conflict'], 'the new event is stored, the repeat with another body refused')
  const rows = await db.selectFrom('calls').select('call_id').where('call_id', 'in', [elsewhere.call.callId, fresh.call.callId]).execute()
  t.same(rows.map((r) => r.call_id), [fresh.call.callId], 'the call the repeat named was never created')
})

t.test('a repeat is answered only to a key that may still touch the call', async (t) => {
  const { calls } = service()
  const hastingsOnly = { mayTouchAgency: (a: string) => a === 'hastings-pd' }
  const first = callEvent({ agency: 'hastings-pd' })
  t.equal((await calls.ingest(first, hastingsOnly)).created, true)
  // The county hands the call to Rosemount (an unscoped key).
  const handed = { ...first, eventId: `${first.eventId}-h`, type: 'call.updated' as const, occurredAt: new Date(Date.parse(first.occurredAt) + 1000).toISOString(), call: { ...first.call, agency: 'rosemount-pd' } }
  t.equal((await calls.ingest(handed)).created, true)
  const again = await calls.ingest(first, hastingsOnly).then(
    () => 'answered',
    (err: AppError) => err.code,
  )
  t.equal(again, 'forbidden', 'Hastings may no longer read the call through a repeat of its old event')
})

t.test('the same eventId from two instances at once: one decision, one 201', async (t) => {
  const one = service()
  const two = service()
  for (let round = 0; round < 5; round++) {
    const ev = callEvent({ natureCode: 'EDP' })
    const [a, b] = await Promise.all([one.calls.ingest(ev), two.calls.ingest(ev)])
    t.same([a.created, b.created].sort(), [false, true], `round ${round}: one stored it, the other answered the repeat`)
    t.equal(a.result.decision.id, b.result.decision.id, 'with the same decision')
    t.equal((await decisionsOf(ev.eventId)).length, 1)
  }
})

t.test('events of one call posted together run in order, one per transaction', async (t) => {
  const { calls } = service({ concurrency: 2 })
  const created = callEvent({ natureCode: 'EDP' })
  const at = (s: number) => new Date(Date.parse(created.occurredAt) + s * 1000).toISOString()
  const update = { ...created, eventId: `${created.eventId}-u`, type: 'call.updated' as const, occurredAt: at(10), call: { ...created.call, flags: { weapons: true, mentalHealth: true } } }
  const close = { ...created, eventId: `${created.eventId}-c`, type: 'call.closed' as const, occurredAt: at(20), call: { ...created.call, disposition: 'field_response' } }
  const [a, b, c] = await Promise.all([calls.ingest(created), calls.ingest(update), calls.ingest(close)])
  t.equal(a.result.decision.route, 'cru')
  t.equal(b.result.decision.route, 'co_response', 'the update saw the call the first event created')
  t.ok(b.result.applied && c.result.applied, 'none of them was stale: they ran in arrival order')
  const call = await db.selectFrom('calls').select(['status', 'decision_id']).where('call_id', '=', created.call.callId).executeTakeFirstOrThrow()
  t.same(call, { status: 'closed', decision_id: c.result.decision.id })
  const open = await db.selectFrom('assignments').select(['queue', 'status']).where('call_id', '=', created.call.callId).where('queue', '<>', 'follow_up').execute()
  t.ok(open.every((x) => x.status === 'cancelled'), 'the close cancelled what the update added')
})

t.test('history inside a batch: a later event counts the calls the earlier ones created, not the other way round', async (t) => {
  const { calls, sizes } = service()
  const personId = `P-batch-${Date.now()}`
  const events = [callEvent({ personId }), callEvent({ personId }), callEvent({ personId })]
  await Promise.all(events.map((e) => calls.ingest(e)))
  t.same(sizes.slice(-1), [3], 'one batch')
  const facts = await Promise.all(
    events.map(async (e) => (await db.selectFrom('decisions').select('facts').where('event_id', '=', e.eventId).executeTakeFirstOrThrow()).facts as { history: { priorCallsForSubject30d: number } }),
  )
  t.same(facts.map((f) => f.history.priorCallsForSubject30d), [0, 1, 2], 'as if they had come one by one, in arrival order')
})

t.test('CRU capacity is counted exactly inside a batch', async (t) => {
  const doc = defaultDocument() as Omit<ReturnType<typeof defaultDocument>, 'cru'> & { cru: Record<string, unknown> }
  doc.version = 2
  doc.cru = { '*': { schedule: 'always' }, 'lakeville-pd': { schedule: 'always', maxOpenAssignments: 2 }, 'farmington-pd': { schedule: 'always', maxOpenAssignments: 1 } }
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets/2/activate', payload: { reason: 'capacity in a batch' } })).statusCode, 200)
  t.teardown(async () => void (await app.inject({ method: 'POST', url: '/v1/rule-sets/1/activate', payload: { reason: 'back' } })))

  const { calls, sizes } = service()
  const crisis = () => callEvent({ agency: 'lakeville-pd', natureCode: 'EDP', flags: { mentalHealth: true } })
  const out = await Promise.all([crisis(), crisis(), crisis(), crisis()].map((e) => calls.ingest(e)))
  t.same(sizes.slice(-1), [4], 'one batch')
  t.same(
    out.map((o) => o.result.decision.route),
    ['cru', 'cru', 'police', 'police'],
    'the third and fourth see the places the first two took in the same transaction',
  )
  t.match(out[2]!.result.decision.fallback?.reason, /CRU at capacity for lakeville-pd \(2 open CRU assignments, limit 2\)/)

  // Across transactions too: two instances, one place left, two calls at the same moment.
  const one = service()
  const two = service()
  const [a, b] = await Promise.all([
    one.calls.ingest(callEvent({ agency: 'farmington-pd', natureCode: 'EDP', flags: { mentalHealth: true } })),
    two.calls.ingest(callEvent({ agency: 'farmington-pd', natureCode: 'EDP', flags: { mentalHealth: true } })),
  ])
  t.same([a.result.decision.route, b.result.decision.route].sort(), ['cru', 'police'], 'the last place goes to one call only')
})

t.test("a close gives back the CRU place of the team its CRU assignment counts against, whatever agency the close names", async (t) => {
  // Two pilot cities, each with one CRU place of its own.
  const doc = defaultDocument() as Omit<ReturnType<typeof defaultDocument>, 'cru'> & { cru: Record<string, unknown> }
  doc.version = (await db.selectFrom('rule_sets').select((eb) => eb.fn.max('version').as('v')).executeTakeFirstOrThrow()).v + 1
  doc.cru = { '*': { schedule: 'always' }, 'apple-valley-pd': { schedule: 'always', maxOpenAssignments: 1 }, 'west-st-paul-pd': { schedule: 'always', maxOpenAssignments: 1 } }
  t.equal((await app.inject({ method: 'POST', url: '/v1/rule-sets', payload: doc })).statusCode, 201)
  t.equal((await app.inject({ method: `POST`, url: `/v1/rule-sets/${doc.version}/activate`, payload: { reason: 'one place each' } })).statusCode, 200)
  t.teardown(async () => void (await app.inject({ method: 'POST', url: '/v1/rule-sets/1/activate', payload: { reason: 'back' } })))

  const { calls, sizes } = service()
  const crisis = (agency: string, i: Parameters<typeof callEvent>[0] = {}) => callEvent({ agency, natureCode: 'EDP', flags: { mentalHealth: true }, ...i })
  const plus = (e: { occurredAt: string }, ms: number) => new Date(Date.parse(e.occurredAt) + ms).toISOString()
  // Apple Valley's place is taken.
  t.equal((await calls.ingest(crisis('apple-valley-pd'))).result.decision.route, 'cru')
  // A noise call in Apple Valley that West St. Paul takes over as a crisis: CRU, West St. Paul's place.
  const noise = callEvent({ agency: 'apple-valley-pd', natureCode: 'NOISE' })
  t.equal((await calls.ingest(noise)).result.decision.route, 'police')
  const moved = crisis('west-st-paul-pd', { type: 'call.updated', callId: noise.call.callId, occurredAt: plus(noise, 60_000) })
  t.equal((await calls.ingest(moved)).result.decision.route, 'co_response', 'police stay primary, CRU beside them')
  const cru = await db.selectFrom('assignments').select('agency').where('call_id', '=', noise.call.callId).where('queue', '=', 'cru').executeTakeFirstOrThrow()
  t.equal(cru.agency, 'west-st-paul-pd')

  // Apple Valley's position closes it, two seconds behind the transfer; a new Apple Valley crisis in the same batch.
  sizes.length = 0
  const [closed, next] = await Promise.all([
    calls.ingest({ ...noise, eventId: `${noise.eventId}-c`, type: 'call.closed', occurredAt: plus(noise, 58_000), call: { ...noise.call, disposition: 'no_contact' } }),
    calls.ingest(crisis('apple-valley-pd')),
  ])
  t.same(sizes, [2], 'one batch')
  t.equal(closed.result.applied, true)
  t.equal(next.result.decision.route, 'police', "Apple Valley's one place is still taken: the close gave back West St. Paul's")
  t.match(next.result.decision.fallback, { reason: /CRU at capacity for apple-valley-pd/ })
  const open = await db.selectFrom('assignments').select((eb) => eb.fn.countAll<string>().as('n')).where('agency', '=', 'apple-valley-pd').where('queue', '=', 'cru').where('status', 'in', ['queued', 'offered', 'acknowledged', 'accepted']).executeTakeFirstOrThrow()
  t.equal(Number(open.n), 1, 'Apple Valley holds no more CRU calls than its one place')
})

t.test('a deadlock or serialisation failure is retried, not answered with an error', async (t) => {
  // Fails the first decision insert with SQLSTATE 40001; a sequence, unlike a table, keeps counting through the rollback.
  await sql`create sequence fail_once`.execute(db)
  await sql`create function fail_once() returns trigger language plpgsql as $$
    begin
      if nextval('fail_once') = 1 then raise exception 'could not serialize access' using errcode = '40001'; end if;
      return null;
    end $$`.execute(db)
  await sql`create trigger fail_once before insert on decisions for each statement execute function fail_once()`.execute(db)
  t.teardown(async () => {
    await sql`drop trigger fail_once on decisions`.execute(db)
    await sql`drop function fail_once()`.execute(db)
    await sql`drop sequence fail_once`.execute(db)
  })
  const { calls, sizes } = service()
  const ev = callEvent()
  const out = await calls.ingest(ev)
  t.equal(out.created, true, 'stored on the second attempt')
  t.equal((await decisionsOf(ev.eventId)).length, 1)
  t.same(sizes, [1, 1], 'the batch ran twice')
  const { rows } = await sql<{ last_value: number }>`select last_value from fail_once`.execute(db)
  t.equal(Number(rows[0]!.last_value), 2, 'the first attempt failed')
})

t.test('a statement time-out fails the whole batch at once (503 for each), nothing half-written', async (t) => {
  const pool = createPool({ connectionString: world.config.DATABASE_URL, max: 4, statementTimeoutMs: 300 })
  const slowDb = createDb(pool)
  t.teardown(() => slowDb.destroy())
  const sizes: number[] = []
  const service = createCallService({ db: slowDb, ruleSets: world.ruleSets, followUpDeadlineHours: 72, batch: { concurrency: 1, onBatch: (n) => sizes.push(n) } })
  const calls = { ingest: (e: unknown) => service.ingest(callEventSchema.parse(e)) }
  const events = [callEvent(), callEvent(), callEvent()]
  // A lock on calls held past the time-out stands in for a Postgres that stopped answering in time.
  const out = await db.transaction().execute(async (trx) => {
    await sql`lock table calls in exclusive mode`.execute(trx)
    return settled(events.map((e) => calls.ingest(e)))
  })
  t.same(sizes, [3], 'one batch, not retried event by event')
  for (const o of out) {
    t.equal(o.status, 'rejected')
    t.ok(o.status === 'rejected' && isUnavailableError(o.reason), 'an error the API answers with 503 and Retry-After')
  }
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', 'in', events.map((e) => e.eventId)).execute()
  t.same(stored, [], 'nothing stored')
})

type Tap = Pick<typeof t, 'teardown'>

/** A service over a pool with a lock timeout of 300 ms, far below its statement timeout (10 s). */
function lockTimeoutService(t: Tap) {
  const lockDb = createDb(createPool({ connectionString: world.config.DATABASE_URL, max: 4, statementTimeoutMs: 10_000, lockTimeoutMs: 300 }))
  t.teardown(() => lockDb.destroy())
  const sizes: number[] = []
  const svc = createCallService({ db: lockDb, ruleSets: world.ruleSets, followUpDeadlineHours: 72, batch: { concurrency: 1, onBatch: (n) => sizes.push(n) } })
  return { ingest: (e: unknown) => svc.ingest(callEventSchema.parse(e)), sizes }
}

/**
 * Ingests `events` at once on `svc` while another session holds what `hold` (a statement and its
 * parameters) takes, then lets go. Answers in the order of `events`.
 */
async function ingestWhileHeld(t: Tap, svc: ReturnType<typeof lockTimeoutService>, hold: [string, unknown[]?], events: unknown[]) {
  const session = await openTransaction(t, world.pool)
  await session.query(...hold)
  const out = await settled(events.map(svc.ingest))
  await session.query('rollback')
  return out
}

const storedEvents = (ids: string[]) => db.selectFrom('call_events').select('event_id').where('event_id', 'in', ids).execute()

t.test('a call locked past the lock timeout: its events answer 503, the events that shared their batches are stored', async (t) => {
  const svc = lockTimeoutService(t)
  const stuck = callEvent({ natureCode: 'EDP' })
  t.equal((await svc.ingest(stuck)).created, true)
  svc.sizes.length = 0
  // Three updates of the locked call wait in the queue: each shares a batch with the others in turn.
  const updates = [1, 2, 3].map((n) => ({ ...stuck, eventId: `${stuck.eventId}-u${n}`, type: 'call.updated', occurredAt: new Date(Date.parse(stuck.occurredAt) + n * 1000).toISOString() }))
  const others = [callEvent({ natureCode: 'NOISE' }), callEvent({ natureCode: 'SUICIDE' })]
  const started = Date.now()
  const out = await ingestWhileHeld(t, svc, ['select 1 from calls where call_id = $1 for update', [stuck.call.callId]], [...updates, ...others])
  const ms = Date.now() - started

  t.same(svc.sizes, [3, 3, 3, 2], 'an update with the two others, three times, then the two others together: never each alone')
  for (const [i, u] of updates.entries()) {
    const o = out[i]!
    t.ok(o.status === 'rejected' && (o.reason as AppError).code === 'service-unavailable', `update ${i + 1}: 503 with Retry-After`)
    t.match(o.status === 'rejected' && (o.reason as Error).message, new RegExp(`call ${stuck.call.callId} is locked by another transaction`))
    t.same(await storedEvents([u.eventId]), [], `update ${i + 1} is not stored`)
  }
  t.ok(ms < 10_000, `answered after lock timeouts, not the statement timeout (${ms} ms)`)
  for (const [i, e] of others.entries()) {
    t.equal(out[updates.length + i]!.status, 'fulfilled', `other call ${i + 1} stored, though it waited with three failed batches`)
    t.equal((await decisionsOf(e.eventId)).length, 1, `other call ${i + 1} decided once`)
  }
})

t.test('a lock the question cannot see (a new call another session is inserting): each event goes again alone, only that one fails', async (t) => {
  const svc = lockTimeoutService(t)
  const [contested, other] = [callEvent(), callEvent()]
  const insert = `insert into calls (call_id, agency, status, nature_code, priority, flags, route, last_occurred_at) values ($1, 'dakota', 'open', 'EDP', 2, '[]', 'cru', now())`
  const out = await ingestWhileHeld(t, svc, [insert, [contested.call.callId]], [contested, other])
  t.same(svc.sizes, [2, 1, 1], 'the batch, then each alone')
  t.ok(out[0]!.status === 'rejected' && (out[0]!.reason as AppError).code === 'service-unavailable', '503 with Retry-After for the contested call')
  t.equal(out[1]!.status, 'fulfilled', 'the other is stored')
  t.same(await storedEvents([contested.eventId]), [], 'nothing of the contested call stored')
  t.equal((await decisionsOf(other.eventId)).length, 1)
})

t.test('a lock on something every event needs: each goes again alone, then 503; nothing half-written', async (t) => {
  const svc = lockTimeoutService(t)
  const events = [callEvent(), callEvent()]
  // No call row is locked: the batch waits on its decisions.
  const out = await ingestWhileHeld(t, svc, ['lock table decisions in exclusive mode'], events)
  t.same(svc.sizes, [2, 1, 1], 'the batch, then each alone')
  for (const o of out) t.ok(o.status === 'rejected' && (o.reason as AppError).code === 'service-unavailable', '503 with Retry-After')
  t.same(await storedEvents(events.map((e) => e.eventId)), [], 'nothing stored')
  t.same(await db.selectFrom('calls').select('call_id').where('call_id', 'in', events.map((e) => e.call.callId)).execute(), [], 'no call created')
})

t.test('a lock on the calls table: the question which call is locked waits too, and every event answers 503 at once', async (t) => {
  const svc = lockTimeoutService(t)
  const events = [callEvent(), callEvent()]
  const out = await ingestWhileHeld(t, svc, ['lock table calls in exclusive mode'], events)
  t.same(svc.sizes, [2], 'one batch, not run again')
  for (const o of out) t.ok(o.status === 'rejected' && isUnavailableError(o.reason), 'an error the API answers with 503 and Retry-After')
  t.same(await storedEvents(events.map((e) => e.eventId)), [], 'nothing stored')
})

t.test('with the shipped batch settings, a call whose row is locked elsewhere does not hold up the calls that come after it', async (t) => {
  const waiting = callEvent({ natureCode: 'EDP' })
  t.equal((await app.inject({ method: 'POST', url: '/v1/call-events', payload: waiting })).statusCode, 201)
  const update = { ...waiting, eventId: `${waiting.eventId}-u`, type: 'call.updated', occurredAt: new Date(Date.parse(waiting.occurredAt) + 1000).toISOString() }
  // Another instance or a session left open holds the call's row.
  const holder = await openTransaction(t, world.pool)
  await holder.query('select 1 from calls where call_id = $1 for update', [waiting.call.callId])
  const held = app.inject({ method: 'POST', url: '/v1/call-events', payload: update })
  // Once its batch waits on the lock, the next call must get the other transaction slot.
  // From another connection: inside its transaction, the holder would see pg_stat_activity as it was at its first read.
  const lockWaits = async () => (await world.pool.query<{ n: number }>("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")).rows[0]!.n
  // Polled up to 15 s: 200 polls of 10 ms (2-4 s) did not always see a loaded machine's request reach the lock.
  await eventually(async () => (await lockWaits()) > 0, 15_000, 10).catch(() => {})
  t.equal(await lockWaits(), 1, 'the update waits on the lock')
  const other = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ natureCode: 'NOISE' }) })
  t.equal(other.statusCode, 201, 'another call is stored meanwhile')
  t.equal(await lockWaits(), 1, 'while the update still waits')
  await holder.query('rollback')
  t.equal((await held).statusCode, 201, 'and it is stored once the lock is gone')
})
