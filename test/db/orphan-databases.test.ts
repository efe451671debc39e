import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import pg from 'pg'
import t from 'tap'
import { dropOrphanDatabases, PG_ADMIN_URL, REDIS_URL, testDatabaseName } from '../helpers/world.js'

// A test file that tap ends for running out of time never runs its teardown: the next file's first
// database drops what it left, and nothing that a live process, a connection or another host holds.
// This file's databases are of a kind of their own ('o'), which no other file's sweep touches.

const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
await admin.connect()
const made: string[] = []
t.teardown(async () => {
  for (const name of made) await admin.query(`drop database if exists ${name} with (force)`)
  await admin.end()
})
const exists = async (name: string) => (await admin.query('select 1 from pg_database where datname = $1', [name])).rowCount === 1
const create = async (opts: { pid: number; host?: string }) => {
  const name = testDatabaseName('o', opts)
  await admin.query(`create database ${name}`)
  made.push(name)
  return name
}

t.test('a dead process’s database and its BullMQ keys go; a live one’s, one in use, or another host’s stay', async (t) => {
  const child = spawn(process.execPath, ['-e', ''])
  await once(child, 'exit')
  const deadPid = child.pid!

  const orphan = await create({ pid: deadPid })
  const inUse = await create({ pid: deadPid })
  const mine = await create({ pid: process.pid })
  // The same dead pid on another machine (or container) sharing this Postgres: its process may live.
  const elsewhere = await create({ pid: deadPid, host: orphan.split('_')[2] === '000000' ? '111111' : '000000' })
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  await redis.set(`t-${orphan}:wait`, '1')
  await redis.set(`t-${mine}:wait`, '1')
  t.teardown(() => redis.del(`t-${mine}:wait`))
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${inUse}`
  const user = new pg.Client({ connectionString: url.toString() })
  await user.connect()
  t.teardown(() => user.end())

  const dropped = await dropOrphanDatabases(admin, ['o'])
  t.same(dropped, [orphan], 'only the database of a process that is gone, on this host')
  t.notOk(await exists(orphan))
  t.equal(await redis.exists(`t-${orphan}:wait`), 0, 'and its BullMQ keys with it')
  t.ok(await exists(inUse), 'one somebody is connected to stays')
  t.ok(await exists(mine), 'one of a live process stays')
  t.equal(await redis.exists(`t-${mine}:wait`), 1, 'with its keys')
  t.ok(await exists(elsewhere), 'one made on another host stays')
})
