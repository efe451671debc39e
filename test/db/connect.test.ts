/**
 * The service's connections (src/db/connect.ts): their lock timeout, what a query without an answer
 * does to its connection (last tests), and JIT.
 *
 * They run without JIT compilation. On a grown database
 * the routing context read's generic plan cost more than jit_above_cost, and Postgres compiled it
 * on every execution (45 ms for a 2 ms statement). Here `jit_above_cost = 0` stands in for the
 * grown tables: every statement passes it.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { loadConfig } from '../../src/config.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { PostgresSilentError } from '../../src/db/silent-queries.js'
import { isUnavailableError } from '../../src/http/errors.js'
import { proxyPostgres } from '../helpers/tcp-proxy.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const db = createDb(createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs: 10_000 }))
t.teardown(() => db.destroy())

const QUERY = `select count(*) from assignments a where a.queue = 'cru' and a.status in ('queued', 'offered') and a.agency = any($1::text[])`
type Plan = [{ JIT?: { Functions: number } }]

const jitAvailable = await (async () => {
  const client = new pg.Client({ connectionString: world.databaseUrl })
  await client.connect()
  try {
    return (await client.query<{ available: boolean }>('select pg_jit_available() as available')).rows[0]!.available
  } finally {
    await client.end()
  }
})()

t.test('a statement past jit_above_cost is not compiled on a service connection', async (t) => {
  const plan = await db.connection().execute(async (conn) => {
    await sql`set jit_above_cost = 0`.execute(conn)
    const { rows } = await sql<{ 'QUERY PLAN': Plan }>`explain (analyze, format json) ${sql.raw(QUERY.replace('$1', `'{dakota}'`))}`.execute(conn)
    await sql`reset jit_above_cost`.execute(conn)
    return rows[0]!['QUERY PLAN'][0]
  })
  t.equal(plan.JIT, undefined, 'no JIT section in the plan')
  const { rows } = await sql<{ jit: string }>`show jit`.execute(db)
  t.equal(rows[0]!.jit, 'off', 'the session says so too, whatever the server has')
})

t.test('options the connection string gives are kept, after ours', async (t) => {
  const url = new URL(world.databaseUrl)
  url.searchParams.set('options', '-c search_path=cadr_elsewhere,public')
  const theirs = createDb(createPool({ connectionString: url.toString(), max: 1, statementTimeoutMs: 10_000 }))
  t.teardown(() => theirs.destroy())
  const { rows } = await sql<{ jit: string; path: string }>`select current_setting('jit') as jit, current_setting('search_path') as path`.execute(theirs)
  t.same(rows[0], { jit: 'off', path: 'cadr_elsewhere,public' })
})

t.test('Postgres drops a vanished client within seconds: the keepalive settings reach every pooled session, whatever the server has', async (t) => {
  const { rows } = await sql<Record<string, string>>`select current_setting('tcp_keepalives_idle') as idle, current_setting('tcp_keepalives_interval') as interval,
    current_setting('tcp_keepalives_count') as count, current_setting('tcp_user_timeout') as user_timeout`.execute(db)
  // (On a Unix-socket connection Postgres ignores them and they read 0; the world connects over TCP.)
  t.same(rows[0], { idle: '10', interval: '1', count: '10', user_timeout: '20000' })
  const plain = new pg.Client({ connectionString: world.databaseUrl })
  await plain.connect()
  t.teardown(() => plain.end())
  const { rows: server } = await plain.query<{ idle: string }>(`select current_setting('tcp_keepalives_idle') as idle`)
  t.not(server[0]!.idle, '10', `not the server's own (${server[0]!.idle}): the test would show nothing`)
})

t.test('the same statement on a plain connection is compiled, when this server has JIT', { skip: !jitAvailable && 'JIT is not available on this Postgres (no LLVM, or jit off in its configuration)' }, async (t) => {
  const client = new pg.Client({ connectionString: world.databaseUrl })
  await client.connect()
  t.teardown(() => client.end())
  await client.query('set jit_above_cost = 0')
  const explained = await client.query<{ 'QUERY PLAN': Plan }>(`explain (analyze, format json) ${QUERY.replace('$1', `'{dakota}'`)}`)
  t.ok((explained.rows[0]!['QUERY PLAN'][0].JIT?.Functions ?? 0) > 0, 'Postgres compiled it: the setting is what the first test sees')
})

t.test('a lock timeout of its own: the pool sets it, a wait past it is a 503, the config derives it from the statement timeout', async (t) => {
  const locking = createDb(createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs: 10_000, lockTimeoutMs: 200 }))
  t.teardown(() => locking.destroy())
  t.equal((await sql<{ lock_timeout: string }>`show lock_timeout`.execute(locking)).rows[0]!.lock_timeout, '200ms')
  const plain = new pg.Client({ connectionString: world.databaseUrl })
  await plain.connect()
  const serverDefault = (await plain.query<{ lock_timeout: string }>('show lock_timeout')).rows[0]!.lock_timeout
  await plain.end()
  t.equal((await sql<{ lock_timeout: string }>`show lock_timeout`.execute(db)).rows[0]!.lock_timeout, serverDefault, "the server's own unless asked for")

  const holder = new pg.Client({ connectionString: world.databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('begin')
  await holder.query('lock table assignments in exclusive mode')
  const started = Date.now()
  const err = await sql`select 1 from assignments for update`.execute(locking).then(
    () => null,
    (e: unknown) => e,
  )
  await holder.query('rollback')
  t.equal((err as { code?: string } | null)?.code, '55P03', 'lock_not_available')
  t.ok(Date.now() - started < 10_000, 'before the statement timeout')
  t.ok(isUnavailableError(err), 'an error the API answers with 503 and Retry-After')

  t.equal(loadConfig({}).DATABASE_LOCK_TIMEOUT_MS, 1000)
  t.equal(loadConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '1000' }).DATABASE_LOCK_TIMEOUT_MS, 500, 'half a short statement timeout')
  t.equal(loadConfig({ DATABASE_LOCK_TIMEOUT_MS: '0' }).DATABASE_LOCK_TIMEOUT_MS, 0, '0: none')
  t.equal(loadConfig({ DATABASE_LOCK_TIMEOUT_MS: ' ' }).DATABASE_LOCK_TIMEOUT_MS, 1000, 'blank: the default, not 0')
  t.throws(() => loadConfig({ DATABASE_LOCK_TIMEOUT_MS: '5000' }), /DATABASE_LOCK_TIMEOUT_MS: must be below DATABASE_STATEMENT_TIMEOUT_MS \(5000\)/)
})

t.test('a query without an answer: given up after the bound, its connection destroyed and never handed out again', async (t) => {
  const { proxy, url } = await proxyPostgres(t, world.databaseUrl)
  const pool = createPool({ connectionString: url, max: 1, statementTimeoutMs: 200, queryTimeoutMs: 400 })
  const silentDb = createDb(pool)
  t.teardown(() => silentDb.destroy())
  const pid = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(silentDb)).rows[0]!.pid
  const before = await pid()

  proxy.freeze()
  const started = performance.now()
  // A transaction: after its statement fails, Kysely's rollback on the same connection must not
  // hang behind it, nor hide why it failed.
  const err = await silentDb
    .transaction()
    .execute((trx) => sql`select 1`.execute(trx))
    .then(() => undefined, (e: unknown) => e)
  const took = performance.now() - started
  t.ok(err instanceof PostgresSilentError, `the caller hears why: ${(err as Error | undefined)?.message}`)
  t.ok(isUnavailableError(err), 'a 503, not a 500')
  t.ok(took >= 400 && took < 1500, `given up after the bound (${Math.round(took)} ms)`)
  t.equal(pool.totalCount, 0, 'the connection left the pool')

  // The old connection stays silent: a query that reached it would wait forever.
  proxy.thaw({ strand: true })
  t.not(await pid(), before, 'the next query runs on a new connection')
  t.equal(proxy.silent(), 1, 'only the connection given up on is silent')
  // Postgres never heard of the close (it is lost in the network): its session stays until the network gives up.
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where pid = ${before}`.execute(db)
  t.equal(rows[0]!.n, 1, 'the stranded session is still there on the server, as over a real network')
})

// The bound of the tests below: long enough that a loaded machine answers a healthy query within it.
const SILENT = { statementTimeoutMs: 500, queryTimeoutMs: 1000 }

/** A pool of `max` through a proxy the test freezes and thaws, and a query that names the connection it ran on. */
async function throughProxy(t: Test, max: number) {
  const { proxy, url } = await proxyPostgres(t, world.databaseUrl)
  const pool = createPool({ connectionString: url, max, ...SILENT })
  const silentDb = createDb(pool)
  t.teardown(() => silentDb.destroy())
  const pid = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(silentDb)).rows[0]!.pid
  return { proxy, pool, silentDb, pid }
}

t.test('connections idle through the same silence are dropped with the one given up on: after the network returns, the next queries run at once', async (t) => {
  const { proxy, pool, silentDb, pid } = await throughProxy(t, 4)
  // Four at once, each held a moment: the pool opens four connections, idle afterwards.
  const held = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid, pg_sleep(0.05)`.execute(silentDb)).rows[0]!.pid
  const before = new Set(await Promise.all([held(), held(), held(), held()]))
  t.equal(before.size, 4, 'four connections, idle in the pool')

  proxy.freeze()
  const err = await pid().then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof PostgresSilentError, `one query met the silence: ${(err as Error | undefined)?.message}`)
  // The other three heard nothing since the silence began either. A firewall that lost its state
  // drops their packets as it drops the first one's: each would cost a caller the whole bound.
  proxy.thaw({ strand: true })
  t.equal(pool.totalCount, 0, 'the pool let go of every connection that sat idle through the silence')

  const after: Array<{ pid: number; ms: number }> = []
  for (let i = 0; i < 4; i++) {
    const started = performance.now()
    after.push({ pid: await pid(), ms: Math.round(performance.now() - started) })
  }
  t.same(after.filter((a) => before.has(a.pid)), [], 'every query after the thaw ran on a new connection')
  t.same(after.filter((a) => a.ms >= SILENT.queryTimeoutMs), [], `none waited out the bound (${after.map((a) => a.ms).join(', ')} ms)`)
})

t.test('a connection heard from since the silence began stays in the pool', async (t) => {
  const { proxy, pool, pid } = await throughProxy(t, 2)
  // One connection meets the silence; the network returns (stranding it) while it still waits, and
  // a second connection opens and answers before the first one's bound runs out.
  const first = await pid()
  proxy.freeze()
  let givenUp = false
  const silent = pid().then(
    () => undefined,
    (e: unknown) => {
      givenUp = true
      return e
    },
  )
  await sleep(100)
  proxy.thaw({ strand: true })
  const fresh = await pid()
  t.not(fresh, first, 'the second query ran on a second connection')
  // Otherwise the second connection was still lent out when the first was given up on, and this test shows nothing.
  t.notOk(givenUp, 'it answered, and went back to the pool, before the first query was given up on')
  t.ok((await silent) instanceof PostgresSilentError, 'the first one was given up on')
  t.equal(pool.totalCount, 1, 'the connection that answered after the silence began is kept')
  t.equal(await pid(), fresh, 'and used')
})

t.test('a connection lent out through the silence is left to its own bound: a transaction whose connection carries again goes on', async (t) => {
  const { proxy, silentDb, pid } = await throughProxy(t, 2)
  // Two connections open, idle: the transaction takes one, the query below the other.
  await Promise.all([0, 1].map(() => sql`select pg_sleep(0.05)`.execute(silentDb)))
  const trx = await silentDb.startTransaction().execute()
  const mine = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid
  // The other connection meets the silence while the transaction waits between two statements.
  proxy.freeze()
  const err = await pid().then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof PostgresSilentError, 'the other connection was given up on')
  // This time the network returns with every connection carrying again.
  proxy.thaw()
  const goesOn = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx).then((r) => r.rows[0]!.pid, (e: unknown) => e)
  t.equal(goesOn, mine, 'the transaction goes on on its own connection')
  await (goesOn === mine ? trx.commit() : trx.rollback()).execute().catch(() => {})
})

t.test('an answer that waited on the socket while the event loop stalled past the bound is not a silence', async (t) => {
  const pool = createPool({ connectionString: world.databaseUrl, max: 2, ...SILENT })
  t.teardown(() => pool.end())
  const client = await pool.connect()
  try {
    // Sent now (the client is idle); Postgres answers within milliseconds, while this process is
    // busy past the bound in a callback of the check phase: the next loop runs timers before it
    // reads the socket.
    const answer = client.query<{ one: number }>('select 1 as one')
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        const until = performance.now() + SILENT.queryTimeoutMs + 300
        while (performance.now() < until);
        resolve()
      }),
    )
    const res = await answer.then((r) => r.rows[0]!.one, (e: unknown) => e)
    t.equal(res, 1, `answered, not given up on (${res instanceof Error ? res.message : res})`)
  } finally {
    client.release()
  }
})

t.test('the query bound is above the statement time-out', async (t) => {
  t.throws(() => createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs: 1000, queryTimeoutMs: 1000 }), /above statementTimeoutMs/)
})

t.test('idle in a transaction: Postgres ends the session after the query bound, never below the wait of the relay for Redis, set in options', async (t) => {
  const read = async (queryTimeoutMs: number, statementTimeoutMs: number) => {
    const pool = createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs, queryTimeoutMs })
    try {
      const client = await pool.connect()
      try {
        return (await client.query<{ v: string }>(`select current_setting('idle_in_transaction_session_timeout') as v`)).rows[0]!.v
      } finally {
        client.release()
      }
    } finally {
      await pool.end()
    }
  }
  t.equal(await read(20_000, 10_000), '20s', 'the query bound')
  // A 500 ms statement timeout (allowed) gives a 1 s bound: the relay's transaction, waiting up to
  // 2 s on a slow Redis, would be ended mid-send and its rows sent again on every pass.
  t.equal(await read(1_000, 500), '5s', 'never below the floor')
  // A startup parameter of its own would be refused by PgBouncer unless listed to be ignored.
  const pool = createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs: 1000 })
  t.teardown(() => pool.end())
  const params = (pool as unknown as { options: Record<string, unknown> }).options
  t.notOk('idle_in_transaction_session_timeout' in params, 'not a startup parameter of its own')
})
