import t from 'tap'
import { randomUUID } from 'node:crypto'
import { callEvent } from '../helpers/events.js'
import { assignmentStreams, feedData } from '../helpers/sse.js'
import { createWorld, eventually, openTransaction } from '../helpers/world.js'

// One ingest transaction at a time, so that events posted together share a batch.
const world = await createWorld(t, { env: { AUTH_CACHE_MS: '60000', INGEST_BATCH_CONCURRENCY: '1' } })
const { app } = world
const base = await app.listen({ port: 0, host: '127.0.0.1' })
const stream = assignmentStreams(t, base)

const post = async (payload: ReturnType<typeof callEvent>) => {
  const res = await app.inject({ method: 'POST', url: '/v1/call-events', payload })
  if (res.statusCode !== 201) throw new Error(`call event answered ${res.statusCode}: ${res.body}`)
  return res.json() as { callId: string; decision: { assignments: { id: string; queue: string }[] } }
}
const waitsForLock = async (like: string): Promise<boolean> =>
  (await world.pool.query(`select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like $1`, [like])).rows.length > 0

t.test('a batch that locks one call, then waits for the next while a console moves its assignment: the feed ends where the listing does', async (t) => {
  const s = await stream({ authorization: `Bearer ${world.adminKey}` })
  const tag = randomUUID().slice(0, 8)
  // Calls are locked in call_id order: the new call first (the batch takes its transaction id
  // there), the closing one second.
  const early = `DC26-a-${tag}`
  const late = `DC26-z-${tag}`
  const blocker = `DC26-m-${tag}`
  const closing = await post(callEvent({ callId: late, agency: 'apple-valley-pd', natureCode: 'EDP' }))
  const cru = closing.decision.assignments.find((a) => a.queue === 'cru')!
  await post(callEvent({ callId: blocker, agency: 'apple-valley-pd', natureCode: 'EDP' }))

  // A session holds the blocker's call, so that the next two events gather into one batch behind
  // it; another holds the closing call with a share lock, as a console's move does.
  const holdBlocker = await openTransaction(t, world.pool)
  await holdBlocker.query('select 1 from calls where call_id = $1 for update', [blocker])
  const holdLate = await openTransaction(t, world.pool)
  await holdLate.query('select 1 from calls where call_id = $1 for share', [late])
  const first = post(callEvent({ type: 'call.updated', callId: blocker, agency: 'apple-valley-pd', natureCode: 'EDP' }))
  await eventually(() => waitsForLock('%insert into "calls"%'))
  const both = Promise.all([
    post(callEvent({ callId: early, agency: 'apple-valley-pd', natureCode: 'EDP' })),
    post(callEvent({ type: 'call.closed', callId: late, agency: 'apple-valley-pd', natureCode: 'EDP', occurredAt: '2026-11-23T18:00:00Z', disposition: 'resolved_by_phone' })),
  ])
  await holdBlocker.query('commit')
  await first
  // The batch of the two has locked (created) the early call and waits for the late one.
  await eventually(async () => (await world.pool.query('select 1 from calls where call_id = $1', [early])).rows.length === 0 && (await waitsForLock('%insert into "calls"%')))

  // The console acknowledges meanwhile (its share lock goes beside the session's), and commits first.
  const ack = await app.inject({ method: 'POST', url: `/v1/assignments/${cru.id}/acknowledge`, payload: {} })
  t.equal(ack.statusCode, 200)
  await holdLate.query('commit')
  await both

  const listed = (await app.inject({ method: 'GET', url: `/v1/assignments?agency=apple-valley-pd&queue=cru&status=cancelled` })).json() as { items: { id: string }[] }
  t.ok(listed.items.some((a) => a.id === cru.id), 'the listing says cancelled')
  await eventually(async () => s.events.filter((e) => feedData(e).assignmentId === cru.id).length >= 3)
  const changes = s.events.map(feedData).filter((d) => d.assignmentId === cru.id)
  t.same(changes.map((d) => `${d.transition.from}>${d.status}`), ['null>queued', 'queued>acknowledged', 'acknowledged>cancelled'], 'a console applying the events in order ends on cancelled')
})
