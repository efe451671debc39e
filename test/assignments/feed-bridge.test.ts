import { randomUUID } from 'node:crypto'
import t from 'tap'
import { Redis } from 'ioredis'
import { createFeedSignals, FEED_CHANNEL } from '../../src/assignments/feed.js'
import { createNotifications } from '../../src/db/listener.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { createWorld, eventually, quietLog } from '../helpers/world.js'

// The feed bridge's lock and its LISTEN are on two connections (the LISTEN is the process's
// shared one): a bridge that can no longer hear must let another instance relay.
const world = await createWorld(t)

t.test('the bridge loses its LISTEN connection for good: it lets the lock go and another instance relays', async (t) => {
  // A's LISTEN connection goes through a proxy the test cuts; its lock connection goes direct.
  const proxy = await startTcpProxy(t, { host: '127.0.0.1', port: 5432 })
  const hubA = createNotifications({ databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/${world.name}`, applicationName: 'bridge-test-a', log: quietLog })
  const hubB = createNotifications({ databaseUrl: world.databaseUrl, applicationName: 'bridge-test-b', log: quietLog })
  const channel = `${world.prefix}:feed-bridge`
  const redisA = new Redis(world.config.REDIS_URL)
  const redisB = new Redis(world.config.REDIS_URL)
  const spy = new Redis(world.config.REDIS_URL)
  const signals = (notifications: typeof hubA, redis: Redis) =>
    createFeedSignals({ databaseUrl: world.databaseUrl, notifications, redis, channel, log: world.app.log, onWake: () => {}, bridgeRetryMs: 200 })
  const a = signals(hubA, redisA)
  await a.start()
  await eventually(async () => a.isBridge(), 3000)
  const b = signals(hubB, redisB)
  await b.start()
  t.teardown(async () => {
    await Promise.all([a.stop(), b.stop()])
    await Promise.all([hubA.close(), hubB.close()])
    await Promise.all([redisA.quit(), redisB.quit()])
    spy.disconnect()
  })
  const heard: string[] = []
  spy.on('message', (_c: string, m: string) => void heard.push(m))
  await spy.subscribe(channel)
  t.notOk(b.isBridge(), 'one bridge at a time')

  await proxy.cut()
  await eventually(async () => b.isBridge(), 5000)
  t.notOk(a.isBridge(), 'A, deaf, is no longer the bridge')
  heard.length = 0
  await world.pool.query('select pg_notify($1, $2)', [FEED_CHANNEL, ''])
  await eventually(async () => heard.length > 0, 3000)
  t.pass('a change committed now is relayed, by B')

  // A hears again: B keeps the lock, A does not take a second one.
  await proxy.restore()
  await new Promise((r) => setTimeout(r, 1500))
  t.same([a.isBridge(), b.isBridge()], [false, true])
})


/**
 * Two instances, A the bridge, B waiting; A's lock connection goes through a proxy the test
 * freezes, and its LISTEN connection too when asked (a proxy the test cuts). Checks, queries and
 * retries every few hundred ms: the lease of A's session is 600 ms.
 */
async function pair(t: { teardown(fn: () => unknown): void }, o: { listenViaProxy: boolean; checkMs?: number }) {
  const lockProxy = await startTcpProxy(t, { host: '127.0.0.1', port: 5432 })
  const listenProxy = await startTcpProxy(t, { host: '127.0.0.1', port: 5432 })
  const via = (port: number) => `postgres://postgres@127.0.0.1:${port}/${world.name}`
  const hubA = createNotifications({ databaseUrl: o.listenViaProxy ? via(listenProxy.port) : world.databaseUrl, applicationName: 'bridge-test-a', log: quietLog })
  const hubB = createNotifications({ databaseUrl: world.databaseUrl, applicationName: 'bridge-test-b', log: quietLog })
  const channel = `${world.prefix}:feed-bridge-${randomUUID()}`
  const redisA = new Redis(world.config.REDIS_URL)
  const redisB = new Redis(world.config.REDIS_URL)
  const spy = new Redis(world.config.REDIS_URL)
  const signals = (notifications: typeof hubA, redis: Redis, databaseUrl: string) =>
    createFeedSignals({ databaseUrl, notifications, redis, channel, log: quietLog, onWake: () => {}, bridgeRetryMs: 200, bridgeCheckMs: o.checkMs ?? 200, bridgeQueryTimeoutMs: 300 })
  const a = signals(hubA, redisA, via(lockProxy.port))
  await a.start()
  await eventually(async () => a.isBridge(), 3000)
  const b = signals(hubB, redisB, world.databaseUrl)
  await b.start()
  t.teardown(async () => {
    await Promise.all([a.stop(), b.stop()])
    await Promise.all([hubA.close(), hubB.close()])
    await Promise.all([redisA.quit(), redisB.quit()])
    spy.disconnect()
  })
  const heard: string[] = []
  spy.on('message', (_c: string, m: string) => void heard.push(m))
  await spy.subscribe(channel)
  /** The pid of the session that holds the bridge's lock. */
  const holder = async () =>
    (
      await world.pool.query<{ pid: number }>(
        `select l.pid from pg_locks l join pg_stat_activity s using (pid) where l.locktype = 'advisory' and l.granted and s.datname = $1 and s.application_name = 'cad-router-feed'`,
        [world.name],
      )
    ).rows[0]?.pid
  /** Whether a change committed now reaches Redis. */
  const relays = async () => {
    heard.length = 0
    await world.pool.query('select pg_notify($1, $2)', [FEED_CHANNEL, ''])
    return eventually(async () => heard.length > 0, 2000).then(
      () => true,
      () => false,
    )
  }
  return { a, b, lockProxy, listenProxy, holder, relays }
}

t.test("the bridge's lock connection goes silent while it still hears: it notices, Postgres ends the session, and one instance relays", async (t) => {
  const { a, b, lockProxy, holder, relays } = await pair(t, { listenViaProxy: false })
  const before = await holder()
  t.ok(before, 'A holds the lock')
  lockProxy.freeze()
  await eventually(async () => !a.isBridge(), 2000).catch(() => {})
  t.notOk(a.isBridge(), "A's check went unanswered: it no longer claims the bridge")
  // New connections get through again; the frozen one stays silent, as a real one does for minutes.
  lockProxy.thaw({ strand: true })
  const after = await eventually(async () => {
    const pid = await holder()
    return pid !== before && pid
  }, 5000).catch(() => undefined)
  t.ok(after, `Postgres ended the silent session (its lease ran out): the lock is held by a new one (${after})`)
  await eventually(async () => a.isBridge() || b.isBridge(), 3000).catch(() => {})
  t.equal([a.isBridge(), b.isBridge()].filter(Boolean).length, 1, 'one bridge')
  t.ok(await relays(), 'a change committed now is relayed')
})

t.test('a partition cuts the bridge off (its LISTEN lost, its lock connection silent): another instance takes over once Postgres ends the session', async (t) => {
  const { a, b, lockProxy, listenProxy, holder, relays } = await pair(t, { listenViaProxy: true })
  const before = await holder()
  lockProxy.freeze()
  await listenProxy.cut()
  // A lets the lock go, but the close of its session is lost in the network.
  await eventually(async () => !a.isBridge(), 3000).catch(() => {})
  t.notOk(a.isBridge(), 'A, deaf, lets the lock go')
  await eventually(async () => b.isBridge(), 5000).catch(() => {})
  t.ok(b.isBridge(), 'B took the lock: the silent session was ended')
  t.not(await holder(), before)
  t.ok(await relays(), 'a change committed now is relayed, by B')
})

t.test('stopped while its lock connection is silent, before a check noticed: the stop does not wait for the close', async (t) => {
  const { a, lockProxy } = await pair(t, { listenViaProxy: false, checkMs: 60_000 })
  lockProxy.freeze()
  const started = Date.now()
  await a.stop()
  t.ok(Date.now() - started < 2000, `stopped in ${Date.now() - started} ms`)
})
