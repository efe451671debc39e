import { performance } from 'node:perf_hooks'
import { sql } from 'kysely'
import t from 'tap'
import { callEvent } from '../helpers/events.js'
import { keepAliveClient } from '../helpers/keep-alive-client.js'
import { eventually, createWorld } from '../helpers/world.js'
import { slowDown } from '../faults/fixtures/harness.js'

// A SIGTERM while a CAD's request is in flight on a keep-alive connection: the request is answered,
// and the server's close ends as soon as it is, not when the connection's keep-alive time (65 s)
// runs out. Before, the close waited, the shutdown's grace period ran out behind it, and a worker
// in the same process was killed without handing its jobs back.
const world = await createWorld(t)
// 2 s: long enough that the test's poll of pg_stat_activity sees it on a loaded machine.
await slowDown(world.db, 'slow_ingest', 'call_events', 2, `new.call_id like 'SLOW-%'`)
const base = await world.app.listen({ port: 0, host: '127.0.0.1' })
const client = keepAliveClient(base, world.adminKey)
t.teardown(() => client.destroy())
const send = client.send

t.test('a request in flight at close is answered, with Connection: close, and the close does not wait for its connection', async (t) => {
  // A connection already kept alive, idle when the close starts (Fastify ends those itself).
  const warm = await send('/healthz')
  t.equal(warm.connection, 'keep-alive', 'before the close, connections are kept alive')

  const event = callEvent({ callId: `SLOW-${Date.now()}` })
  const answer = send('/v1/call-events', { method: 'POST', body: event })
  // The insert sleeps in Postgres: the request is in flight.
  await eventually(async () => {
    const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = ${world.name} and wait_event = 'PgSleep'`.execute(world.db)
    return r.rows[0]!.n > 0
  }, 15_000)

  const started = performance.now()
  let closedAt: number | undefined
  const closed = world.app.close().then(() => (closedAt = performance.now()))
  const res = await answer
  const answeredAt = performance.now()
  t.equal(res.status, 201, 'the request in flight is answered')
  t.equal((JSON.parse(res.body) as { callId?: string }).callId, event.call.callId, 'with its own answer')
  t.equal(res.connection, 'close', 'and told that its connection ends')

  // Bounded, so a close that waits for the connection fails here rather than at tap's time-out. The
  // bounds tell a close that ends with the request from one that waits for the connection's 65 s
  // keep-alive; a second, once used, is less than the rest of the app's close can take on a
  // loaded machine.
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 20_000).unref())])
  t.ok(closedAt !== undefined, `the close ended (it waited ${closedAt === undefined ? 'over 20 s' : `${Math.round(closedAt - started)} ms`})`)
  t.ok(closedAt !== undefined && closedAt - answeredAt < 10_000, `within 10 s of the answer, not 65 (${closedAt === undefined ? '-' : Math.round(closedAt - answeredAt)} ms)`)
  const stored = await world.db.selectFrom('call_events').select('event_id').where('event_id', '=', event.eventId).execute()
  t.equal(stored.length, 1, 'the event is stored')
})
