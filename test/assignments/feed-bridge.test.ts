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
