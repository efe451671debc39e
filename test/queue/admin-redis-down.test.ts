/**
 * The queue admin (bull-board and the failed-jobs listing) reads Redis on its own connection. With
 * Redis down, its requests must be 503 with Retry-After, as every other request whose store is away,
 * not a 500 — and never end the process: BullMQ handles made on a connection that has never been
 * ready leave a rejection nobody handles. Both before the dashboard was first opened (bull-board's
 * handles are made in its onRequest hook, before the rate limiter ever asks Redis) and after.
 */
import t, { type Test } from 'tap'
import { whenReady } from '../../src/queue/redis.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { createWorld, eventually } from '../helpers/world.js'

// First, so that its teardown (kill the server) runs last, after everything that talks to it.
const server = await startRedisServer(t)
const world = await createWorld(t, { redisUrl: server.url })
const URLS = ['/admin/queues/api/queues', '/v1/admin/failed-jobs']
const get = (url: string) => world.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${world.adminKey}` } })

async function unavailable(t: Test) {
  for (const url of URLS) {
    const answer = await get(url)
    t.equal(answer.statusCode, 503, `${url}: 503 (${answer.body.slice(0, 200)})`)
    t.match(answer.headers['content-type'], /application\/problem\+json/, `${url}: a problem`)
    t.ok(answer.headers['retry-after'], `${url}: Retry-After`)
  }
  // A rejection nobody handled would have ended this process (and failed the file) by now.
  await new Promise((r) => setTimeout(r, 500))
}

t.test('Redis down before the dashboard was ever opened: 503 with Retry-After', async (t) => {
  await server.kill()
  await unavailable(t)
})

t.test('Redis down after the dashboard opened: 503 with Retry-After', async (t) => {
  await server.start()
  t.ok(await whenReady(world.redis, 10_000), 'the API connection is back')
  // The breaker opened while Redis was down; it closes at its next probe once Redis answers.
  t.ok(await eventually(async () => (await get('/admin/queues/api/queues')).statusCode === 200, 15_000), 'the dashboard answers with Redis up')
  await server.kill()
  await unavailable(t)
})

t.test('Redis hanging after the dashboard opened: 503 once the rate limiter has found it hung, never a request left waiting', async (t) => {
  await server.start()
  t.ok(await whenReady(world.redis, 10_000), 'the API connection is back')
  await eventually(async () => (await get('/admin/queues/api/queues')).statusCode === 200, 15_000)
  server.pause()
  t.teardown(() => server.resume())
  // The dashboard's own connection waits without a time-out: only the breaker keeps it from Redis.
  const answer = await Promise.race([get('/admin/queues/api/queues'), new Promise<'no answer'>((r) => setTimeout(() => r('no answer'), 10_000))])
  t.not(answer, 'no answer', 'answered while Redis hangs')
  if (answer !== 'no answer') {
    t.equal(answer.statusCode, 503, `503 (${answer.body.slice(0, 200)})`)
    t.ok(answer.headers['retry-after'], 'Retry-After')
  }
})
