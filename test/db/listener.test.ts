import { createServer, type AddressInfo } from 'node:net'
import t from 'tap'
import { createNotifications, type ChannelHandlers } from '../../src/db/listener.js'
import { withTimeout } from '../../src/lib/timeout.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { canReadSocketTimers, serverKeepaliveSeconds } from '../helpers/server-keepalive.js'
import { createWorld, eventually, quietLog } from '../helpers/world.js'

// One LISTEN connection per process, whatever the number of channels: Postgres signals every
// listening connection of the database at each notifying commit (bench/README.md).
const world = await createWorld(t)
const APP = 'cad-router-listen-test'

/** A subscriber that records what it heard. */
function recorder(): ChannelHandlers & { payloads: string[]; listenings: number } {
  const r = {
    payloads: [] as string[],
    listenings: 0,
    onNotify: (p: string) => void r.payloads.push(p),
    onListening: () => void r.listenings++,
  }
  return r
}

const connections = async () =>
  Number((await world.pool.query<{ n: string }>('select count(*) as n from pg_stat_activity where datname = $1 and application_name = $2', [world.name, APP])).rows[0]!.n)
const notify = (channel: string, payload: string) => world.pool.query('select pg_notify($1, $2)', [channel, payload])
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('several channels share one connection; each subscriber hears its own channel', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  t.teardown(() => hub.close())
  t.equal(await connections(), 0, 'nothing connects before the first subscription')
  const a = recorder()
  const b = recorder()
  const la = hub.subscribe('t_listen_a', a)
  const lb = hub.subscribe('t_listen_b', b)
  await Promise.all([la.started(), lb.started()])
  t.ok(la.listening() && lb.listening())
  t.equal(await connections(), 1, 'one connection for both channels')
  t.equal(a.listenings, 1)

  await notify('t_listen_a', 'one')
  await notify('t_listen_b', 'two')
  await eventually(async () => a.payloads.length === 1 && b.payloads.length === 1, 2000)
  t.same([a.payloads, b.payloads], [['one'], ['two']])

  // A later subscription on the live connection: it hears from then on, on the same connection.
  const c = recorder()
  const lc = hub.subscribe('t_listen_a', c)
  await lc.started()
  t.equal(c.listenings, 1)
  await notify('t_listen_a', 'three')
  await eventually(async () => c.payloads.length === 1, 2000)
  t.same(a.payloads, ['one', 'three'], 'both subscribers of a channel hear it')
  t.equal(await connections(), 1)

  // A closed subscription hears nothing more; the others still do.
  await la.close()
  t.notOk(la.listening())
  await notify('t_listen_a', 'four')
  await eventually(async () => c.payloads.length === 2, 2000)
  t.same(a.payloads, ['one', 'three'], 'nothing after close')
  await hub.close()
  t.notOk(lc.listening() || lb.listening(), 'nobody listens once the connection is closed')
})

t.test('a lost connection is replaced: every channel listens again and every subscriber is told', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  t.teardown(() => hub.close())
  const a = recorder()
  const b = recorder()
  const la = hub.subscribe('t_listen_c', a)
  const lb = hub.subscribe('t_listen_d', b)
  await Promise.all([la.started(), lb.started()])
  const killed = await world.pool.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = $2', [world.name, APP])
  t.equal(killed.rowCount, 1)
  await eventually(async () => a.listenings === 2 && b.listenings === 2, 5000)
  t.ok(la.listening() && lb.listening(), 'listening again (the subscribers catch up on what they missed meanwhile)')
  t.equal(await connections(), 1, 'one connection again')
  await notify('t_listen_c', 'after')
  await notify('t_listen_d', 'after')
  await eventually(async () => a.payloads.length === 1 && b.payloads.length === 1, 2000)
  t.pass('both channels hear again')
})

t.test('Postgres unreachable: the first wait ends, nobody listens, closing stops the retries', async (t) => {
  // A port that hangs up on every connection, counting them: each is one attempt of the hub's.
  let attempts = 0
  const refuser = createServer((socket) => {
    attempts++
    socket.destroy()
  })
  await new Promise<void>((r) => refuser.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => refuser.close(() => r())))
  const port = (refuser.address() as AddressInfo).port
  const hub = createNotifications({ databaseUrl: `postgres://postgres@127.0.0.1:${port}/nowhere`, applicationName: APP, log: quietLog })
  const a = recorder()
  const la = hub.subscribe('t_listen_e', a)
  await la.started()
  t.notOk(la.listening())
  t.equal(a.listenings, 0)
  // The second attempt comes a second after the first (then two, four… seconds apart).
  await eventually(async () => attempts >= 2, 10_000)
  await hub.close()
  const atClose = attempts
  await new Promise((r) => setTimeout(r, 2_500))
  t.equal(attempts, atClose, `no attempt after the close (${atClose} before it)`)
  t.throws(() => hub.subscribe('t_listen_e', a), /closed/)
})

t.test('a hub made for one consumer closes its connection with the last subscription', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog, closeWhenEmpty: true })
  const l = hub.subscribe('t_listen_f', recorder())
  await l.started()
  t.equal(await connections(), 1)
  await l.close()
  await eventually(async () => (await connections()) === 0, 2000)
  t.pass('no connection left')
  t.throws(() => hub.subscribe('not a channel', recorder()), /closed|not a channel/)
})

t.test('channel names are identifiers (they are written into LISTEN)', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  t.teardown(() => hub.close())
  t.throws(() => hub.subscribe('a; drop table calls', recorder()), /not a channel name/)
})

t.test('a channel named like a keyword listens too (names are quoted)', async (t) => {
  const warnings: string[] = []
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: { info: () => {}, warn: (_o: unknown, m?: string) => void warnings.push(String(m)) } })
  t.teardown(() => hub.close())
  const good = recorder()
  const lg = hub.subscribe('t_listen_good', good)
  await lg.started()
  // "user" passes the identifier check but is a reserved word: bare, `listen user` does not parse,
  // and the failed LISTEN took the whole connection down, for every channel, once a second.
  const user = recorder()
  const lu = hub.subscribe('user', user)
  await lu.started()
  t.ok(lu.listening() && lg.listening(), 'both listen')
  await notify('user', 'x')
  await eventually(async () => user.payloads.length === 1, 2000)
  await sleep(1500)
  t.same(warnings, [], 'no reconnects')
  t.equal(good.listenings, 1)
})

t.test('closing and subscribing again while a LISTEN is in flight', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  t.teardown(() => hub.close())
  const a = recorder()
  const la = hub.subscribe('t_listen_x', a)
  await la.started()
  const closing = la.close()
  const b = recorder()
  const lb = hub.subscribe('t_listen_x', b)
  await closing
  await lb.started()
  await notify('t_listen_x', 'one')
  await eventually(async () => b.payloads.length === 1, 2000)
  t.same([a.payloads, b.listenings], [[], 1], 'the closed one hears nothing; the new one listens once')

  // Subscribed and closed before its LISTEN returned, with another subscriber right behind.
  const c = recorder()
  const lc = hub.subscribe('t_listen_y', c)
  const cClosing = lc.close()
  const d = recorder()
  const ld = hub.subscribe('t_listen_y', d)
  await Promise.all([cClosing, ld.started()])
  await notify('t_listen_y', 'two')
  await eventually(async () => d.payloads.length === 1, 2000)
  t.same([c.payloads, c.listenings, d.listenings], [[], 0, 1])
})

t.test('closed while connecting: the waits end and no connection stays', async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  const l = hub.subscribe('t_listen_z', recorder())
  await hub.close()
  await l.started()
  await eventually(async () => (await connections()) === 0, 2000)
  t.pass('no connection left')
})

t.test('while Postgres is away: a new subscriber does not wait out the backoff, and onLost is told', async (t) => {
  const proxy = await startTcpProxy(t, { host: '127.0.0.1', port: 5432 })
  // The first reconnect's failure, as the hub logs it: the hub schedules the next attempt (2 s
  // away) in the same turn, so a subscriber made right after it meets the whole 2 s backoff.
  let retryFailed!: () => void
  const firstRetryFailed = new Promise<void>((r) => (retryFailed = r))
  const log = { info: () => {}, warn: (_o: unknown, m?: string) => void (m === 'listener could not connect; retrying' && retryFailed()) }
  const hub = createNotifications({ databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/${world.name}`, applicationName: APP, log })
  t.teardown(() => hub.close())
  let lost = 0
  const a = recorder()
  const la = hub.subscribe('t_listen_p', { ...a, onLost: () => void lost++ })
  await la.started()
  await proxy.cut()
  await eventually(async () => lost === 1)
  t.notOk(la.listening())
  // Not a fixed sleep: on a loaded machine the 1 s retry may not have run (or failed) yet after 1.5 s.
  await withTimeout(firstRetryFailed, 30_000, 'the first reconnect never logged its failure (has the warning changed?)')
  const started = performance.now()
  const lb = hub.subscribe('t_listen_q', recorder())
  await lb.started()
  t.ok(performance.now() - started < 1000, `the new subscriber's first wait ended at once (${Math.round(performance.now() - started)} ms)`)
  await proxy.restore()
  await eventually(async () => la.listening() && lb.listening(), 10_000)
  t.equal(a.listenings, 2, 'back: the first subscriber is told again')
})

t.test("the LISTEN connection's session: Postgres probes it after 10 s idle, not two hours", { skip: !canReadSocketTimers && 'no ss here to read the socket timer' }, async (t) => {
  const hub = createNotifications({ databaseUrl: world.databaseUrl, applicationName: APP, log: quietLog })
  t.teardown(() => hub.close())
  await hub.subscribe('t_listen_keepalive', recorder()).started()
  // Read on the server's socket: nothing else can query this connection. Asked until the socket
  // shows its keepalive timer (a session of an earlier test still closing, or a retransmission
  // timer, reads as undefined): each ask runs ss, which a loaded machine can make slow, so 10 s.
  const seconds = await eventually(() => serverKeepaliveSeconds(world.pool, world.name, APP), 10_000)
  t.ok(seconds !== undefined && seconds <= 10, `next probe in ${seconds} s`)
})
