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
import { createWorld } from '../helpers/world.js'

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
  let status = 0
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = (await get('/admin/queues/api/queues')).statusCode
    if (status !== 200) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(status, 200, 'the dashboard answers with Redis up')
  await server.kill()
  await unavailable(t)
})
