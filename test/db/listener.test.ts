import t from 'tap'
import { createNotifications, type ChannelHandlers } from '../../src/db/listener.js'
import { freePort } from '../helpers/redis-server.js'
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
  const port = await freePort()
  const hub = createNotifications({ databaseUrl: `postgres://postgres@127.0.0.1:${port}/nowhere`, applicationName: APP, log: quietLog })
  const a = recorder()
  const la = hub.subscribe('t_listen_e', a)
  await la.started()
  t.notOk(la.listening())
  t.equal(a.listenings, 0)
  await hub.close()
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
