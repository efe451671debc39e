import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
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
  // A's LISTEN connection goes through a proxy the test cuts; its lock connection's proxy stays
  // open. The shipped check and query bound: nothing here is about a silent lock connection.
  const { a, b, listenProxy, relays } = await pair(t, { listenViaProxy: true, checkMs: 5000, queryTimeoutMs: 5000 })
  t.notOk(b.isBridge(), 'one bridge at a time')

  await listenProxy.cut()
  await eventually(async () => b.isBridge(), 10_000)
  t.notOk(a.isBridge(), 'A, deaf, is no longer the bridge')
  t.ok(await relays(), 'a change committed now is relayed, by B')

  // A hears again: B keeps the lock, A does not take a second one. Waited for, not slept on: A's
  // LISTEN comes back on its own backoff (1 s, 2 s, 4 s… after the cut: on a loaded machine easily
  // more than a fixed pause), and only then does A ask for the lock. So: until a session of A's
  // (one that was not there before) has asked for it and been answered, then a few of A's retries.
  const feedSessions = async () =>
    (
      await world.pool.query<{ pid: number; asked: boolean }>(
        `select pid, state = 'idle' and query like '%pg_try_advisory_lock%' as asked from pg_stat_activity where datname = $1 and application_name = 'cad-router-feed'`,
        [world.name],
      )
    ).rows
  const before = new Set((await feedSessions()).map((s) => s.pid))
  await listenProxy.restore()
  const asked = await eventually(async () => (await feedSessions()).some((s) => s.asked && !before.has(s.pid)), 20_000).catch(() => false)
  t.ok(asked, 'A, hearing again, asked for the lock')
  await new Promise((r) => setTimeout(r, 3 * 200))
  t.same([a.isBridge(), b.isBridge()], [false, true])
})


/**
 * Two instances, A the bridge, B waiting; A's lock connection goes through a proxy the test
 * freezes, and its LISTEN connection too when asked (a proxy the test cuts). Checks, queries and
 * retries every few hundred ms: the lease of A's session is 600 ms. The waits below allow 10 s:
 * what they wait for takes under a second unloaded, and without the lease it never comes (the
 * frozen proxy's kernel acknowledges Postgres's keepalive probes, so no TCP timer ends the session).
 */
async function pair(t: { teardown(fn: () => unknown): void }, o: { listenViaProxy: boolean; checkMs?: number; queryTimeoutMs?: number }) {
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
    createFeedSignals({ databaseUrl, notifications, redis, channel, log: quietLog, onWake: () => {}, bridgeRetryMs: 200, bridgeCheckMs: o.checkMs ?? 200, bridgeQueryTimeoutMs: o.queryTimeoutMs ?? 300 })
  const a = signals(hubA, redisA, via(lockProxy.port))
  await a.start()
  await eventually(async () => a.isBridge(), 10_000)
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
    return eventually(async () => heard.length > 0, 10_000).then(
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
  await eventually(async () => !a.isBridge(), 10_000).catch(() => {})
  t.notOk(a.isBridge(), "A's check went unanswered: it no longer claims the bridge")
  // New connections get through again; the frozen one stays silent, as a real one does for minutes.
  lockProxy.thaw({ strand: true })
  const after = await eventually(async () => {
    const pid = await holder()
    return pid !== before && pid
  }, 10_000).catch(() => undefined)
  t.ok(after, `Postgres ended the silent session (its lease ran out): the lock is held by a new one (${after})`)
  await eventually(async () => a.isBridge() || b.isBridge(), 10_000).catch(() => {})
  t.equal([a.isBridge(), b.isBridge()].filter(Boolean).length, 1, 'one bridge')
  t.ok(await relays(), 'a change committed now is relayed')
})

t.test('a partition cuts the bridge off (its LISTEN lost, its lock connection silent): another instance takes over once Postgres ends the session', async (t) => {
  const { a, b, lockProxy, listenProxy, holder, relays } = await pair(t, { listenViaProxy: true })
  const before = await holder()
  lockProxy.freeze()
  await listenProxy.cut()
  // A lets the lock go, but the close of its session is lost in the network.
  await eventually(async () => !a.isBridge(), 10_000).catch(() => {})
  t.notOk(a.isBridge(), 'A, deaf, lets the lock go')
  await eventually(async () => b.isBridge(), 10_000).catch(() => {})
  t.ok(b.isBridge(), 'B took the lock: the silent session was ended')
  t.not(await holder(), before)
  t.ok(await relays(), 'a change committed now is relayed, by B')
})

t.test('stopped while its lock connection is silent, before a check noticed: the stop does not wait for the close', async (t) => {
  const { a, lockProxy } = await pair(t, { listenViaProxy: false, checkMs: 60_000 })
  lockProxy.freeze()
  const started = performance.now()
  await a.stop()
  // Its close bounded at 1 s; waiting for it would be waiting for ever (the frozen proxy never
  // passes it on, nor the end of the session).
  const took = Math.round(performance.now() - started)
  t.ok(took < 3000, `stopped in ${took} ms`)
})
