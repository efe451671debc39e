import t from 'tap'
import pg from 'pg'
import { callEvent } from '../helpers/events.js'
import { assignmentStreams, feedData, openSse, type SseEvent } from '../helpers/sse.js'
import { PG_ADMIN_URL, createWorld, eventually, openTransaction } from '../helpers/world.js'
import { comparePositions, feedHead, feedHorizon, readFeed } from '../../src/assignments/feed.js'
import { offerNow } from '../../src/workers/responder-worker.js'

// Keys cached for the longest time the config allows: a test that holds every connection of the
// service's pool must find its key cached, however slow a loaded machine makes the steps before
// (changes of keys still arrive at once, by NOTIFY).
const world = await createWorld(t, { env: { AUTH_CACHE_MS: '60000' } })
const { app } = world
const base = await app.listen({ port: 0, host: '127.0.0.1' })
const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
const admin = bearer(world.adminKey)

const stream = assignmentStreams(t, base)
/** Whether a statement of this database whose text is `like` waits for a lock (another transaction holds what it needs). */
const waitsForLock = async (like: string): Promise<boolean> =>
  (await world.pool.query(`select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like $1`, [like])).rows.length > 0

async function post(agency = 'hastings-pd', natureCode = 'EDP') {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency, natureCode }) })
  if (res.statusCode !== 201) throw new Error(`call event answered ${res.statusCode}`)
  const body = res.json() as { callId: string; decision: { assignments: { id: string; queue: string }[] } }
  return { callId: body.callId, assignments: body.decision.assignments }
}

const move = (id: string, action: string) => app.inject({ method: 'POST', url: `/v1/assignments/${id}/${action}`, payload: {} })

/** Every transition of the database, in the feed's order, as "assignment:to". */
async function allChanges(): Promise<string[]> {
  const rows = await world.pool.query<{ assignment_id: string; to_status: string }>('select assignment_id, to_status from assignment_transitions order by feed_xid, id')
  return rows.rows.map((r) => `${r.assignment_id}:${r.to_status}`)
}
const key = (e: SseEvent) => {
  const d = feedData(e)
  return `${d.assignmentId}:${d.status}`
}

t.test('a console receives new assignments and their moves, with event ids', async (t) => {
  const s = await stream(admin)
  t.equal(s.status, 200)
  t.match(s.headers['content-type'], /^text\/event-stream/)
  t.equal(s.headers['cache-control'], 'no-cache, no-transform')
  const call = await post('hastings-pd', 'EDP')
  const a = call.assignments[0]!
  const [created] = await s.waitFor(call.assignments.length)
  t.equal(created!.event, 'assignment')
  t.match(created!.id, /^\d+-\d+$/)
  const d = feedData(created!)
  t.equal(d.assignmentId, a.id)
  t.equal(d.callId, call.callId)
  t.equal(d.queue, a.queue)
  t.equal(d.status, 'queued')
  t.same(d.transition.from, null)
  t.equal(d.transition.actor, 'router')
  t.equal(d.assignment.id, a.id)
  t.notMatch(created!.data, /Lindqvist|Ekdahl|651-555|pacing/, 'no personal data in the feed')

  t.equal((await move(a.id, 'acknowledge')).statusCode, 200)
  t.equal((await move(a.id, 'accept')).statusCode, 200)
  const all = await s.waitFor(call.assignments.length + 2)
  const moves = all.slice(call.assignments.length).map(feedData)
  t.same(moves.map((m) => [m.assignmentId, m.transition.from, m.status]), [
    [a.id, 'queued', 'acknowledged'],
    [a.id, 'acknowledged', 'accepted'],
  ])
  const ids = all.map((e) => e.id!)
  t.equal(new Set(ids).size, ids.length, 'event ids are unique')
})

t.test('resume with Last-Event-ID: nothing lost, nothing repeated', async (t) => {
  const start = (await allChanges()).length
  const first = await stream(admin)
  const c1 = await post('hastings-pd', 'EDP')
  const got = await first.waitFor(c1.assignments.length)
  first.close()
  const last = got[got.length - 1]!.id!

  // While the console is away: new calls and moves.
  const c2 = await post('rosemount-pd', 'NOISE')
  await move(c1.assignments[0]!.id, 'acknowledge')
  const c3 = await post('hastings-pd', 'EDP')
  // Accept, not decline: a decline escalates, which would add the escalation's own changes.
  await move(c2.assignments[0]!.id, 'accept')

  const missed = (await allChanges()).slice(start + c1.assignments.length)
  t.equal(missed.length, c2.assignments.length + 1 + c3.assignments.length + 1)
  const again = await stream({ ...admin, 'last-event-id': last })
  const replay = await again.waitFor(missed.length)
  t.same(replay.map(key), missed, 'exactly the changes after the last event, in order')
  // And then live changes, still without repeats.
  await move(c3.assignments[0]!.id, 'acknowledge')
  const more = await again.waitFor(missed.length + 1)
  t.equal(key(more[missed.length]!), `${c3.assignments[0]!.id}:acknowledged`)
  await new Promise((r) => setTimeout(r, 200))
  t.equal(again.events.length, missed.length + 1, 'no repeats')

  // The same resume through the query string (EventSource cannot set headers on the first request).
  const viaQuery = await stream(admin, `?lastEventId=${encodeURIComponent(last)}`)
  t.same((await viaQuery.waitFor(missed.length + 1)).map(key), [...missed, `${c3.assignments[0]!.id}:acknowledged`])
})

t.test('transactions committing out of id order are neither skipped nor repeated', async (t) => {
  const live = await stream(admin)
  const call = await post('hastings-pd', 'EDP')
  const a = call.assignments[0]!.id
  const base0 = (await live.waitFor(call.assignments.length)).length
  const insert = (c: pg.Client, reason: string) =>
    c.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason) values ($1, 'queued', 'queued', 'primary', 'test', $2) returning id`, [a, reason])
  const early = new pg.Client({ connectionString: world.databaseUrl })
  const late = new pg.Client({ connectionString: world.databaseUrl })
  await early.connect()
  await late.connect()
  t.teardown(async () => {
    await early.end().catch(() => {})
    await late.end().catch(() => {})
  })

  // `early` takes its transaction id first and inserts after `late`: late's row must wait, since
  // early may still write rows that come before it in the feed's order.
  await early.query('begin')
  await early.query('select pg_current_xact_id()')
  await late.query('begin')
  const lateId = (await insert(late, 'late')).rows[0]!.id as number
  const earlyId = (await insert(early, 'early')).rows[0]!.id as number
  t.ok(Number(earlyId) > Number(lateId), 'ids handed out in the other order')
  await late.query('commit')
  // late's transaction id is above early's, which is still open: the feed must hold late back.
  await new Promise((r) => setTimeout(r, 300))
  t.equal(live.events.length, base0, 'nothing handed out while an older transaction is open')

  const before = live.events.length
  await early.query('commit')
  const both = await live.waitFor(before + 2)
  t.same(both.slice(before).map((e) => feedData(e).transition.reason), ['early', 'late'], 'in transaction order once both are final')

  // The other interleaving: the older transaction inserts the lower id and commits last. A cursor
  // on ids would hand out quick's row and then skip slow's for good.
  const ids0 = live.events.length
  await early.query('begin')
  await insert(early, 'slow')
  await late.query('begin')
  await insert(late, 'quick')
  await late.query('commit')
  await new Promise((r) => setTimeout(r, 200))
  t.equal(live.events.length, ids0, 'quick waits for slow')
  await early.query('commit')
  const after = await live.waitFor(ids0 + 2)
  t.same(after.slice(ids0).map((e) => feedData(e).transition.reason), ['slow', 'quick'])

  // Resume from each event of the run: always exactly the rest.
  const run = live.events.slice()
  for (let i = 0; i < run.length; i++) {
    const r = await stream({ ...admin, 'last-event-id': run[i]!.id! })
    const rest = await r.waitFor(run.length - i - 1)
    t.same(rest.map((e) => e.id), run.slice(i + 1).map((e) => e.id), `resume after event ${i}`)
    r.close()
  }
})

t.test('an open transaction in another database does not hold the feed back', async (t) => {
  const s = await stream(admin)
  const other = new pg.Client({ connectionString: PG_ADMIN_URL })
  await other.connect()
  t.teardown(() => other.end().catch(() => {}))
  await other.query('begin')
  await other.query('select pg_current_xact_id()')
  const call = await post('hastings-pd', 'EDP')
  const got = await s.waitFor(call.assignments.length, 3000)
  t.same(got.map((e) => feedData(e).assignmentId), call.assignments.map((a) => a.id))
  await other.query('rollback')
})

t.test('a resumed console that missed changes committed out of order gets them all', async (t) => {
  const call = await post('hastings-pd', 'EDP')
  const a = call.assignments[0]!.id
  const c1 = new pg.Client({ connectionString: world.databaseUrl })
  const c2 = new pg.Client({ connectionString: world.databaseUrl })
  await c1.connect()
  await c2.connect()
  t.teardown(async () => {
    await c1.end().catch(() => {})
    await c2.end().catch(() => {})
  })
  const s = await stream(admin)
  await move(a, 'acknowledge')
  // The stream may also carry the creation, if the feed had not reached it when the stream opened.
  await eventually(async () => s.events.some((e) => feedData(e).status === 'acknowledged'))
  const ack = s.events.find((e) => feedData(e).status === 'acknowledged')
  s.close()
  // Many writers interleaving, the console away.
  const ins = (c: pg.Client, reason: string) =>
    c.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason) values ($1, 'acknowledged', 'acknowledged', 'primary', 'test', $2)`, [a, reason])
  for (let i = 0; i < 5; i++) {
    await c1.query('begin')
    await c2.query('begin')
    await ins(c1, `c1-${i}`)
    await ins(c2, `c2-${i}`)
    await c2.query('commit')
    await c1.query('commit')
  }
  const expected = (await world.pool.query<{ reason: string }>(`select reason from assignment_transitions where assignment_id = $1 and actor = 'test' order by feed_xid, id`, [a])).rows.map((r) => r.reason)
  t.equal(expected.length, 10)
  const r = await stream({ ...admin, 'last-event-id': ack!.id! })
  const got = await r.waitFor(10)
  t.same(got.map((e) => feedData(e).transition.reason), expected)
  await new Promise((res) => setTimeout(res, 200))
  t.equal(r.events.length, 10, 'nothing repeated')
})

t.test('agency and queue scope: a Hastings console never sees Rosemount', async (t) => {
  const hastingsCru = bearer(await world.key('console', { agencies: ['hastings-pd'], queues: ['cru'] }))
  const hastingsAll = bearer(await world.key('console', { agencies: ['hastings-pd'] }))
  const police = bearer(await world.key('console', { agencies: ['hastings-pd', 'rosemount-pd'], queues: ['police'] }))
  const sCru = await stream(hastingsCru)
  const sAll = await stream(hastingsAll)
  const sPolice = await stream(police)
  // An explicit filter outside the key's scope sees nothing, rather than failing open.
  const sOther = await stream(hastingsAll, '?agency=rosemount-pd')
  const sNarrow = await stream(police, '?agency=rosemount-pd')

  const r1 = await post('rosemount-pd', 'EDP')
  const r2 = await post('rosemount-pd', 'NOISE')
  const h1 = await post('hastings-pd', 'NOISE')
  const h2 = await post('hastings-pd', 'EDP')
  const hastingsCruIds = h2.assignments.filter((a) => a.queue === 'cru').map((a) => a.id)
  t.ok(hastingsCruIds.length > 0)
  const got = await sCru.waitFor(hastingsCruIds.length)
  t.same(got.map((e) => feedData(e).assignmentId), hastingsCruIds)
  const allH = [...h1.assignments, ...h2.assignments].map((a) => a.id)
  t.same((await sAll.waitFor(allH.length)).map((e) => feedData(e).assignmentId), allH)
  const policeIds = [...r1.assignments, ...r2.assignments, ...h1.assignments, ...h2.assignments].filter((a) => a.queue === 'police').map((a) => a.id)
  t.same((await sPolice.waitFor(policeIds.length)).map((e) => feedData(e).assignmentId), policeIds)
  const rosemountPolice = [...r1.assignments, ...r2.assignments].filter((a) => a.queue === 'police').map((a) => a.id)
  t.same((await sNarrow.waitFor(rosemountPolice.length)).map((e) => feedData(e).assignmentId), rosemountPolice)

  // A resume from far back with a scoped key replays only its own.
  const replay = await stream({ ...hastingsCru, 'last-event-id': '1-0' })
  await replay.waitFor(1)
  await new Promise((r) => setTimeout(r, 300))
  for (const s of [sCru, sAll, replay]) t.ok(s.events.every((e) => feedData(e).agency === 'hastings-pd'), 'only Hastings')
  t.ok(sCru.events.every((e) => feedData(e).queue === 'cru') && replay.events.every((e) => feedData(e).queue === 'cru'))
  t.ok(sPolice.events.every((e) => feedData(e).queue === 'police'))
  t.equal(sOther.events.length, 0)

  // A police-only console sees each assignment in the feed exactly as its listing shows it.
  const listed = (await app.inject({ method: 'GET', url: '/v1/assignments?queue=police&limit=200', headers: police })).json() as { items: Record<string, unknown>[] }
  const last = new Map(sPolice.events.map((e) => [feedData(e).assignmentId, feedData(e).assignment as unknown as Record<string, unknown>]))
  for (const [id, fromFeed] of last) {
    const item = listed.items.find((x) => x.id === id)
    t.same(fromFeed, item, `assignment ${id}: the feed shows what the listing shows`)
  }
  t.equal(sAll.events.length, allH.length, 'nothing else arrived')
})

t.test('a call handed to another agency: changes of the assignments it keeps reach the consoles of their own agency, and only those', async (t) => {
  const hastings = bearer(await world.key('console', { agencies: ['hastings-pd'] }))
  const dakota = bearer(await world.key('console', { agencies: ['dakota-so'] }))
  const sHastings = await stream(hastings)
  const sDakota = await stream(dakota)
  const ingest = async (type: 'call.created' | 'call.updated' | 'call.closed', callId: string | undefined, agency: string, natureCode: string, flags = {}) => {
    const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ type, ...(callId ? { callId } : {}), agency, natureCode, flags }) })
    t.equal(res.statusCode, 201, `${type} stored`)
    return res.json() as { callId: string; decision: { assignments: { id: string; queue: string; role: string }[] } }
  }
  // Hastings's CRU takes the call; CAD then hands it to the sheriff with a weapon on scene (police
  // of Dakota SO lead, Hastings's CRU stays beside them), and closes it.
  const created = await ingest('call.created', undefined, 'hastings-pd', 'EDP')
  const cru = created.decision.assignments.find((a) => a.queue === 'cru')!
  t.equal(cru.role, 'primary')
  const updated = await ingest('call.updated', created.callId, 'dakota-so', 'EDP', { weapons: true })
  const sheriff = updated.decision.assignments.find((a) => a.queue === 'police')!
  t.not(sheriff.id, cru.id)
  t.equal(updated.decision.assignments.find((a) => a.id === cru.id)?.role, 'support', 'Hastings’s CRU is kept, as support')
  await ingest('call.closed', created.callId, 'dakota-so', 'EDP', { weapons: true })

  // Hastings's console works CRU's assignment (its listing shows it, its moves reach it): it hears
  // every change of it, the role change and the cancellation included.
  const listed = (await app.inject({ method: 'GET', url: '/v1/assignments?limit=200', headers: hastings })).json() as { items: { id: string; status: string; role: string }[] }
  t.match(listed.items.find((a) => a.id === cru.id), { status: 'cancelled', role: 'support' }, 'the listing of Hastings shows it cancelled')
  // The listing reads the close's commit; the stream hears of it only once the feed hub has read it:
  // wait for the cancellation itself (then a little longer, for anything that should not come).
  const cruChanges = () => sHastings.events.map(feedData).filter((d) => d.assignmentId === cru.id)
  await eventually(async () => cruChanges().some((d) => d.status === 'cancelled'))
  await new Promise((r) => setTimeout(r, 300))
  const own = sHastings.events.map(feedData)
  t.same(
    own.filter((d) => d.assignmentId === cru.id).map((d) => `${d.status}/${d.transition.role}`),
    ['queued/primary', 'queued/support', 'cancelled/support'],
    'Hastings’s stream carries every change of its assignment',
  )
  t.ok(own.every((d) => d.agency === 'hastings-pd' && d.assignment.agency === 'hastings-pd'), 'and nothing of another agency')
  // The sheriff's console hears its own assignments (police, and the follow-up the close made),
  // never Hastings's CRU.
  await eventually(async () => sDakota.events.map(feedData).some((d) => d.assignmentId === sheriff.id && d.status === 'cancelled'))
  await new Promise((r) => setTimeout(r, 300))
  const theirs = sDakota.events.map(feedData)
  t.same(theirs.filter((d) => d.assignmentId === cru.id), [], 'nothing of Hastings’s CRU assignment reaches the sheriff')
  t.same(theirs.filter((d) => d.assignmentId === sheriff.id).map((d) => d.status), ['queued', 'cancelled'])
  t.ok(theirs.every((d) => d.agency === 'dakota-so' && d.assignment.agency === 'dakota-so'), 'only the sheriff’s own')
})

t.test('an update that changes a role while a console moves the assignment: the feed carries the status the console gave it', async (t) => {
  const s = await stream(admin)
  const ingest = async (type: 'call.created' | 'call.updated', callId: string | undefined, flags = {}) =>
    app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ type, ...(callId ? { callId } : {}), agency: 'apple-valley-pd', natureCode: 'EDP', flags }) })
  const created = (await ingest('call.created', undefined)).json() as { callId: string; decision: { assignments: { id: string; queue: string }[] } }
  const cru = created.decision.assignments.find((a) => a.queue === 'cru')!
  // A console acknowledges CRU's assignment while CAD's update (a weapon: police lead, CRU beside
  // them) is between its read of the call's assignments and its write: the acknowledgement commits
  // once the update has read the assignment as queued and waits for its row.
  const desk = await openTransaction(t, world.pool)
  await desk.query(`update assignments set status = 'acknowledged', updated_at = now() where id = $1`, [cru.id])
  await desk.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor) values ($1, 'queued', 'acknowledged', 'primary', 'console-desk')`, [cru.id])
  const updating = ingest('call.updated', created.callId, { weapons: true })
  // The update's write waits for the row the console holds.
  await eventually(() => waitsForLock('%insert into "call_events"%'))
  await desk.query('commit')
  t.equal((await updating).statusCode, 201)

  const listed = (await app.inject({ method: 'GET', url: '/v1/assignments?agency=apple-valley-pd&queue=cru' })).json() as { items: { id: string; status: string; role: string }[] }
  t.match(listed.items.find((a) => a.id === cru.id), { status: 'acknowledged', role: 'support' })
  await eventually(async () => s.events.filter((e) => feedData(e).assignmentId === cru.id).length >= 3)
  const changes = s.events.map(feedData).filter((d) => d.assignmentId === cru.id)
  t.same(
    changes.map((d) => `${d.transition.from}>${d.status}/${d.transition.role}`),
    ['null>queued/primary', 'queued>acknowledged/primary', 'acknowledged>acknowledged/support'],
    'the role change says the assignment is acknowledged, as the listing does: a console applying it does not put it back to queued',
  )
  t.match(changes[2]!.assignment, { status: 'acknowledged', role: 'support' })
})

t.test('a close while a worker offers the assignment: the cancellation says it was offered', async (t) => {
  const s = await stream(admin)
  const ev = callEvent({ agency: 'apple-valley-pd', natureCode: 'EDP' })
  const created = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: ev })).json() as { callId: string; decision: { assignments: { id: string; queue: string }[] } }
  const cru = created.decision.assignments.find((a) => a.queue === 'cru')!
  // The worker's offer commits once the close has read the assignment as queued and waits for its row.
  const worker = await openTransaction(t, world.pool)
  await worker.query(`update assignments set status = 'offered', updated_at = now() where id = $1`, [cru.id])
  await worker.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor) values ($1, 'queued', 'offered', 'primary', 'worker:cru')`, [cru.id])
  const closing = app.inject({
    method: 'POST',
    url: '/v1/call-events',
    payload: callEvent({ type: 'call.closed', callId: created.callId, agency: 'apple-valley-pd', natureCode: 'EDP', occurredAt: '2026-11-23T18:00:00Z', disposition: 'resolved_by_phone' }),
  })
  await eventually(() => waitsForLock('%insert into "call_events"%'))
  await worker.query('commit')
  t.equal((await closing).statusCode, 201)

  const stored = await world.db.selectFrom('assignment_transitions').select(['from_status', 'to_status', 'actor']).where('assignment_id', '=', cru.id).orderBy('id').execute()
  t.same(
    stored.map((r) => `${r.from_status}>${r.to_status} ${r.actor}`),
    ['null>queued router', 'queued>offered worker:cru', 'offered>cancelled cad'],
    'the stored history says what the close cancelled: an offered assignment',
  )
  await eventually(async () => s.events.filter((e) => feedData(e).assignmentId === cru.id).length >= 3)
  t.same(s.events.map(feedData).filter((d) => d.assignmentId === cru.id).map((d) => `${d.transition.from}>${d.status}`), ['null>queued', 'queued>offered', 'offered>cancelled'])
})

t.test('an offer while a close holds the call: the feed ends where the listing does', async (t) => {
  const s = await stream(admin)
  const created = (await app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency: 'apple-valley-pd', natureCode: 'EDP' }) })).json() as {
    callId: string
    decision: { assignments: { id: string; queue: string }[] }
  }
  const cru = created.decision.assignments.find((a) => a.queue === 'cru')!
  // Plain SQL standing in for ingest's close: it locks the call first (and so takes its transaction
  // id, which orders the feed), reads, then writes the cancellation.
  const close = await openTransaction(t, world.pool)
  await close.query('update calls set call_id = call_id where call_id = $1', [created.callId])
  const offering = offerNow(world.db, cru.id, 'cru')
  // Either the offer waits for the call, or it is done.
  let offered: string | undefined
  void offering.then((r) => (offered = r))
  await eventually(async () => offered !== undefined || (await waitsForLock('%held as materialized%')))
  const { rows } = await close.query<{ status: string }>('select status from assignments where id = $1 for update', [cru.id])
  await close.query(`update assignments set status = 'cancelled', updated_at = now() where id = $1`, [cru.id])
  await close.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor) values ($1, $2, 'cancelled', 'primary', 'cad')`, [cru.id, rows[0]!.status])
  await close.query('commit')
  t.equal(await offering, 'unchanged', 'the offer came after the close, and found it cancelled')

  const listed = (await app.inject({ method: 'GET', url: '/v1/assignments?agency=apple-valley-pd&queue=cru&status=cancelled' })).json() as { items: { id: string }[] }
  t.ok(listed.items.some((a) => a.id === cru.id), 'the listing says cancelled')
  await eventually(async () => s.events.filter((e) => feedData(e).assignmentId === cru.id).length >= 2)
  const changes = s.events.map(feedData).filter((d) => d.assignmentId === cru.id)
  t.same(changes.map((d) => `${d.transition.from}>${d.status}`), ['null>queued', 'queued>cancelled'], 'a console applying the events in order ends on cancelled')
})

t.test('a quiet scope read from far back: short reads of a bounded window, each moving on, that miss nothing', async (t) => {
  const start = await feedHead(world.db)
  const mine: string[] = []
  for (let i = 0; i < 24; i++) {
    const call = await post(i % 8 === 5 ? 'window-mine' : 'window-other', 'NOISE')
    if (i % 8 === 5) mine.push(...call.assignments.map((a) => a.id))
  }
  t.equal(mine.length, 3)
  const upTo = { xid: await feedHorizon(world.db), id: 0 }
  const total = Number(
    (await world.pool.query<{ n: string }>('select count(*) as n from assignment_transitions where (feed_xid, id) > ($1::xid8, $2::bigint) and feed_xid < $3::xid8', [String(start.xid), start.id, String(upTo.xid)])).rows[0]!.n,
  )
  const scope = { agencies: ['window-mine'], queues: null }
  let at = start
  let reads = 0
  let empty = 0
  const seen: string[] = []
  while (comparePositions(at, upTo) < 0) {
    const r = await readFeed(world.db, { after: at, upTo, scope, limit: 500, scanWindow: 5 })
    t.ok(comparePositions(r.next, at) > 0, 'every read moves on')
    if (!r.events.length) empty++
    seen.push(...r.events.map((e) => e.data.assignmentId))
    at = r.next
    if (++reads > total) break
  }
  // (When the last window is exactly full, one more read finds the range empty.)
  t.ok(reads >= Math.ceil(total / 5) && reads <= Math.floor(total / 5) + 1, `${total} changes in ${reads} reads of 5: the window bounds each read`)
  t.ok(empty > 0, 'a window without a change of the scope still moves the reader on')
  t.same(seen, mine, "every change of the scope, in order, and no one else's")
  const whole = await readFeed(world.db, { after: start, upTo, scope: { agencies: null, queues: null }, limit: 500, scanWindow: 5 })
  t.equal(whole.events.length, total, 'an unscoped read is not windowed: its page limit bounds it')
})

t.test('a console far behind (4 MB of changes, a slow reader) catches up page by page, in order', async (t) => {
  const live = await stream(admin)
  const call = await post('hastings-pd', 'EDP')
  await live.waitFor(call.assignments.length)
  const from = live.events[live.events.length - 1]!.id!
  // About 4 MB of changes in one transaction: several pages, each larger than the socket buffer.
  await world.pool.query(
    `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason)
     select $1, 'queued', 'queued', 'primary', 'bulk', lpad(g::text, 1200, '.') from generate_series(1, 3000) g`,
    [call.assignments[0]!.id],
  )
  const behind = await stream({ ...admin, 'last-event-id': from })
  // The console reads nothing for a while: the server must wait for it rather than buffer 4 MB. (It may
  // be live before the hub reads the insert; then a full socket sends it back to catch-up, not away.)
  behind.pause()
  await new Promise((r) => setTimeout(r, 1000))
  behind.resume()
  const got = await behind.waitFor(3000, 30_000)
  t.same(
    got.map((e) => Number(feedData(e).transition.reason!.replace(/^\.+/, ''))),
    Array.from({ length: 3000 }, (_, i) => i + 1),
  )
  await live.waitFor(call.assignments.length + 3000, 30_000)
  t.equal(live.events.length, call.assignments.length + 3000, 'the live console got them once too')
})

t.test('listing, then stream from its Feed-Position: nothing in between is lost', async (t) => {
  const call = await post('hastings-pd', 'EDP')
  const a = call.assignments[0]!.id
  const open = new pg.Client({ connectionString: world.databaseUrl })
  await open.connect()
  t.teardown(() => open.end().catch(() => {}))
  // A move in flight while the console loads its listing: not in the page, so it must be in the stream.
  await open.query('begin')
  await open.query(`update assignments set status = 'acknowledged' where id = $1`, [a])
  await open.query(`insert into assignment_transitions (assignment_id, from_status, to_status, role, actor) values ($1, 'queued', 'acknowledged', 'primary', 'in-flight')`, [a])
  const listing = await app.inject({ method: 'GET', url: '/v1/assignments?limit=200' })
  const position = listing.headers['feed-position'] as string
  t.match(position, /^\d+-0$/)
  t.equal((listing.json() as { items: { id: string; status: string }[] }).items.find((x) => x.id === a)?.status, 'queued')
  await open.query('commit')
  await move(a, 'accept')
  const s = await stream(admin, `?lastEventId=${position}`)
  await eventually(async () => s.events.some((e) => feedData(e).assignmentId === a && feedData(e).status === 'accepted'))
  // The position may be a little behind the page (any open transaction of the cluster holds it
  // back), so the stream may repeat changes the page already shows; never miss one.
  const forA = s.events.map(feedData).filter((d) => d.assignmentId === a)
  t.same(forA.slice(-2).map((d) => d.status), ['acknowledged', 'accepted'])
})

t.test('refusals: bad event id, no key, wrong role', async (t) => {
  const bad = await app.inject({ method: 'GET', url: '/v1/assignments/stream', headers: { 'last-event-id': 'abc' } })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().invalidParams[0].name, 'headers.last-event-id')
  t.equal((await app.inject({ method: 'GET', url: '/v1/assignments/stream', headers: { authorization: '' } })).statusCode, 401)
  const auditor = bearer(await world.key('auditor'))
  t.equal((await app.inject({ method: 'GET', url: '/v1/assignments/stream', headers: auditor })).statusCode, 403)
})

t.test('a key revoked or narrowed while its stream is open ends the stream as soon as the change is heard, not at the next heartbeat', async (t) => {
  // This world's heartbeat is the default 15 s: an end within 10 s of the change (the stream opened
  // just before it) is the notification's doing, with room for a loaded CI machine.
  for (const change of ['revoke', 'narrow'] as const) {
    const created = await app.inject({ method: 'POST', url: '/v1/keys', payload: { name: `streaming-${change}`, role: 'console', agencies: ['hastings-pd'] } })
    const { id, key } = created.json() as { id: string; key: string }
    const s = await openSse(`${base}/v1/assignments/stream`, bearer(key))
    t.equal(s.status, 200)
    const started = Date.now()
    if (change === 'revoke') t.equal((await app.inject({ method: 'POST', url: `/v1/keys/${id}/revoke` })).statusCode, 200)
    else await world.db.updateTable('api_keys').set({ queues: ['police'] }).where('id', '=', id).execute()
    const ended = await Promise.race([s.ended.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))])
    t.ok(ended, `${change}: the stream ended in ${Date.now() - started} ms`)
  }
})

t.test('heartbeats keep the stream open', async (t) => {
  const w = await createWorld(t, { env: { FEED_HEARTBEAT_MS: '50' } })
  const url = await w.app.listen({ port: 0, host: '127.0.0.1' })
  const s = await openSse(`${url}/v1/assignments/stream`, bearer(w.adminKey))
  // Three beats of 50 ms, polled for rather than slept for: on a loaded machine the timers and the
  // socket reads run late. (At the default 15 s, three would take 45 s.)
  const beats = () => s.comments.filter((c) => c === 'keep-alive').length
  t.ok(await eventually(async () => beats() >= 3, 5000).catch(() => false), `comment lines at the heartbeat interval (${beats()})`)

  // A key revoked while its stream is open: the stream ends at the next heartbeat, and stays shut.
  const consoleKey = await w.key('console', { agencies: ['hastings-pd'], name: 'revoked-console' })
  const doomed = await openSse(`${url}/v1/assignments/stream`, bearer(consoleKey))
  t.equal(doomed.status, 200)
  await w.pool.query(`update api_keys set revoked_at = now() where name = 'revoked-console'`)
  await doomed.ended
  t.equal((await openSse(`${url}/v1/assignments/stream`, bearer(consoleKey))).status, 401)

  // Closing the app ends the streams instead of waiting for the consoles to go.
  await w.close()
  await s.ended
  t.pass('stream ended on shutdown')
})

t.test("consoles catching up read on connections of their own: they never take the service's pool from ingest", async (t) => {
  await post()
  await post()
  const changes = await allChanges()
  const warm = await stream(admin) // the hub is started and the key is cached
  warm.close()
  // Every connection of the service's pool taken, as a crowd of consoles resuming from an old
  // position took them before: a resume from the start still reads to the end.
  const held = await Promise.all(Array.from({ length: world.pool.options.max }, () => world.pool.connect()))
  t.teardown(() => held.forEach((c) => c.release()))
  const s = await stream({ ...admin, 'last-event-id': '0-0' })
  t.equal(s.status, 200)
  // A bound on liveness only (a reader on the service's pool would never get a connection): 4 MB of
  // catch-up on a loaded machine, as the slow-reader test above allows.
  t.same((await s.waitFor(changes.length, 30_000)).slice(0, changes.length).map(key), changes, 'every change from the start, in order')
  s.close()
})

t.test('more consoles catching up than connections for it: they wait their turn, none is refused', async (t) => {
  const changes = await allChanges()
  // Slow reads: the feed's table locked for 3.5 s, longer than a pool's 3 s wait for a connection.
  const holder = await openTransaction(t, world.pool)
  await holder.query('lock table assignment_transitions in access exclusive mode')
  const opening = [1, 2, 3, 4, 5].map(() => stream({ ...admin, 'last-event-id': '0-0' }))
  await new Promise((r) => setTimeout(r, 3500))
  await holder.query('rollback')
  for (const s of await Promise.all(opening)) {
    t.equal(s.status, 200)
    // Liveness only (a refused console would get no 200 at all): five readers of 4 MB each, taking turns.
    t.same((await s.waitFor(changes.length, 30_000)).slice(0, changes.length).map(key), changes, 'every change from the start')
    s.close()
  }
})
