/**
 * Ingest needs only Postgres (README: "ingest needs only Postgres, so a load balancer keeps the
 * instance during a Redis outage"). A Redis that is down refuses at once and the rate limiter lets
 * requests through; a Redis that hangs — its process stopped, a network that drops packets, a
 * stall behind a slow disk — answers nothing and refuses nothing. Its commands must still end, or
 * every CAD post waits on the limiter for as long as Redis hangs.
 */
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { closeRedis, createRedis, whenReady } from '../../src/queue/redis.js'
import { callEvent } from '../helpers/events.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, quietLog } from '../helpers/world.js'

// First, so that its teardown (kill the server) runs last, after everything that talks to it.
const server = await startRedisServer(t)
const world = await createWorld(t, { redisUrl: server.url })
const { db, config, ruleSets } = world

// The API's Redis connection exactly as main.ts makes it.
const probe = createRedis(server.url, 'probe')
t.teardown(() => closeRedis(probe))
await whenReady(probe, 10_000)
const app = await buildApp({ config, db, redis: probe, ruleSets, logger: quietLog })
t.teardown(() => app.close())

const post = (body: unknown) =>
  app.inject({ method: 'POST', url: '/v1/call-events', payload: body as object, headers: { authorization: `Bearer ${world.adminKey}` } })

/** The answer, or 'no answer' when none came within `ms` (far beyond any time-out the service sets). */
const within = <T>(p: Promise<T>, ms: number) => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<'no answer'>((r) => (timer = setTimeout(() => r('no answer'), ms)))]).finally(() => clearTimeout(timer))
}

t.test('a Redis that hangs does not hold up ingest: the event is stored and answered 201', async (t) => {
  const before = callEvent()
  t.equal((await post(before)).statusCode, 201, 'with Redis answering')

  server.pause()
  t.teardown(() => server.resume())
  const event = callEvent()
  const res = await within(post(event), 30_000)
  t.not(res, 'no answer', 'answered while Redis hangs')
  if (res !== 'no answer') t.equal(res.statusCode, 201, res.body)
  const stored = await db.selectFrom('call_events').select('event_id').where('event_id', '=', event.eventId).executeTakeFirst()
  t.ok(stored, 'the event is stored')
})
