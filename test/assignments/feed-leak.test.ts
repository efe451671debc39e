/**
 * A console that leaves while its stream waits to start sets nothing up: no heartbeat, no feed
 * subscription, no key-change watcher outlives it (src/assignments/feed-routes.ts, the check of
 * `res.destroyed` right after `reply.hijack()`).
 *
 * The app is built on a key cache whose `onChange` counts the watchers alive. The stream's start is
 * held up on purpose: two open streams check their key on the feed's two catch-up connections while
 * another connection holds `api_keys` locked, so a stream resuming with Last-Event-ID queues for a
 * turn. Its console disconnects there; then the lock goes, and no watcher may be left behind.
 * (Woken long-polls would hold the turns the same way, but a transaction holding an ACCESS
 * EXCLUSIVE lock has a transaction id, which holds the feed's horizon back: no change wakes them.)
 */
import { channel } from 'node:diagnostics_channel'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyReply, FastifyRequest } from 'fastify'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { CATCH_UP_APPLICATION_NAME } from '../../src/assignments/feed-routes.js'
import { createKeyCache, type KeyCache } from '../../src/auth/key-cache.js'
import { openSse } from '../helpers/sse.js'
import { createWorld, eventually, quietLog } from '../helpers/world.js'

// Keys cached for the longest time the config allows: with `api_keys` locked, a request must find
// its key cached, however slow a loaded machine makes the steps before.
const world = await createWorld(t, { env: { AUTH_CACHE_MS: '60000' } })

/** Key-change watchers subscribed and not yet stopped. */
let watchers = 0
const cache = createKeyCache({ db: world.db, ttlMs: 60_000, maxEntries: 1000, databaseUrl: world.databaseUrl })
const keys: KeyCache = {
  ...cache,
  onChange(fn) {
    const stop = cache.onChange(fn)
    watchers++
    let stopped = false
    return () => {
      if (!stopped) watchers--
      stopped = true
      stop()
    }
  },
}
const app = await buildApp({ config: world.config, db: world.db, redis: world.redis, ruleSets: world.ruleSets, logger: quietLog, keys })
const base = await app.listen({ port: 0, host: '127.0.0.1' })

/** Releases `api_keys` (a no-op when nothing holds it); set while the lock is held. */
let releaseLock = async () => {}
// In this order: a lock still held would keep the app's catch-up reads waiting as it closes.
t.teardown(async () => {
  await releaseLock()
  await app.close()
  await cache.close()
  await world.close()
})

// Fastify publishes the start of every route handler (and the handler's store: request, reply, error).
interface HandlerStore {
  request: FastifyRequest
  reply: FastifyReply
  route: { url: string; method: string }
  error?: unknown
}
const handlerStarted = channel('tracing:fastify.request.handler:start')
const started: HandlerStore[] = []
const onStart = (message: unknown) => void started.push(message as HandlerStore)
handlerStarted.subscribe(onStart)
t.teardown(() => void handlerStarted.unsubscribe(onStart))
const handlersOf = (url: string) => started.filter((s) => s.route.url === url)

const consoleKey = await world.key('console', { agencies: ['hastings-pd'] })
const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

const list = () => app.inject({ method: 'GET', url: '/v1/assignments', headers: bearer(consoleKey) })

t.test('the counted watchers are the streams’: one while a stream is open, none after', async (t) => {
  const before = watchers
  const s = await openSse(`${base}/v1/assignments/stream`, bearer(consoleKey))
  t.equal(s.status, 200, 'the stream opens')
  t.equal(watchers, before + 1, 'an open stream watches its key')
  s.close()
  await eventually(async () => watchers === before, 5000, 5)
  t.pass('and stops watching when its console leaves')
})

t.test('a console that disconnects while its resumed stream waits for a catch-up turn leaves nothing behind', async (t) => {
  // The cache's LISTEN connection opens on its first key, and forgets every key once it is up: wait
  // for it, so that the key cached below stays cached.
  t.equal((await list()).statusCode, 200, 'the console lists its assignments')
  await eventually(async () => cache.listening(), 30_000)
  const listing = await list()
  t.equal(listing.statusCode, 200, 'and again, with its key cached')
  const position = listing.headers['feed-position'] as string
  t.match(position, /^\d+-\d+$/, 'a feed position to resume from')
  // With `api_keys` locked, authentication must not wait: the key used below is cached now.
  t.equal(cache.size(), 1, 'the console key is cached')

  // `api_keys` locked: a key check blocks on it, holding a catch-up connection.
  const lock = await world.pool.connect()
  let locked = true
  releaseLock = async () => {
    if (!locked) return
    locked = false
    await lock.query('rollback').catch(() => {})
    lock.release(true)
  }
  await lock.query('begin')
  await lock.query('lock table api_keys in access exclusive mode')
  const waitingOnLock = async () =>
    (
      await world.pool.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity where datname = $1 and application_name = $2 and wait_event_type = 'Lock'`,
        [world.name, CATCH_UP_APPLICATION_NAME],
      )
    ).rows[0]!.n

  // Two streams open; each checks its key on a catch-up connection as it starts, and waits there.
  const beforeStreams = watchers
  const blockers = [await openSse(`${base}/v1/assignments/stream`, bearer(consoleKey)), await openSse(`${base}/v1/assignments/stream`, bearer(consoleKey))]
  t.teardown(() => blockers.forEach((b) => b.close()))
  t.same(blockers.map((b) => b.status), [200, 200], 'two streams open')
  await eventually(async () => (await waitingOnLock()) === 2, 5000, 10)
  t.pass('their key checks hold both catch-up connections, waiting on the lock')

  // A stream that resumes from a position must wait for a catch-up turn before it starts.
  const baseline = watchers
  t.equal(baseline, beforeStreams + 2, 'the two open streams watch their key')
  let server: { res: ServerResponse; closed: Promise<unknown> } | undefined
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (!req.url?.startsWith('/v1/assignments/stream') || !req.headers['last-event-id']) return
    // Not events.once: the request emits 'error' (aborted) before its 'close'.
    const closed = (e: IncomingMessage | ServerResponse) => new Promise<void>((resolve) => e.once('close', () => resolve()))
    server = { res, closed: Promise.all([closed(req), closed(res)]) }
  }
  app.server.on('request', onRequest)
  t.teardown(() => void app.server.off('request', onRequest))
  const streamsBefore = handlersOf('/v1/assignments/stream').length
  const client = http.get(`${base}/v1/assignments/stream`, { headers: { accept: 'text/event-stream', ...bearer(consoleKey), 'last-event-id': position } })
  client.on('error', () => {}) // the socket reset by destroy() below
  let answered = false
  client.on('response', () => (answered = true))
  const waiting = await eventually(async () => handlersOf('/v1/assignments/stream')[streamsBefore], 5000, 5)
  await sleep(50)
  t.notOk(waiting.reply.sent, 'the stream has not started: it waits for its turn')
  t.equal(await waitingOnLock(), 2, 'the key checks still hold both turns')

  // The console goes away while it waits.
  client.destroy()
  t.ok(server, 'the server received the stream request')
  await server!.closed
  t.ok(server!.res.destroyed, 'the server saw the console leave')

  await releaseLock()
  // The waiting stream gets its turn and reaches the point where a stream starts (reply.hijack()).
  await eventually(async () => waiting.reply.sent, 5000, 5)
  t.equal(waiting.error, undefined, 'its handler did not fail')
  t.notOk(answered, 'the console that left was sent nothing')
  // Should a stream leak all the same, its cleanup runs once it is seen, so the file fails instead of
  // hanging on the leaked heartbeat (its listener for 'close' came after the event).
  t.teardown(() => {
    if (watchers > beforeStreams) server?.res.emit('close')
  })
  t.equal(watchers, baseline, 'no key-change watcher is left behind by the console that left')
  await sleep(300)
  t.equal(watchers, baseline, 'nor appears later')

  // The key checks that held the turns passed (the key did not change): the streams stay open.
  await eventually(async () => (await waitingOnLock()) === 0, 5000, 10)
  const oneEnded = Promise.race(blockers.map((b) => b.ended)).then(() => true)
  t.notOk(await Promise.race([oneEnded, sleep(100).then(() => false)]), 'the two streams are still open')
  blockers.forEach((b) => b.close())
  t.ok(await eventually(async () => watchers === beforeStreams, 5000, 5).catch(() => false), 'closed, they leave no watcher either')
})
