/**
 * Prepared statements (src/db/prepared.ts): a statement marked with `prepared` is parsed and
 * planned once per connection and then only bound and executed; unmarked statements are sent as
 * text, as before. Read back from pg_prepared_statements on the connection itself.
 */
import { sql } from 'kysely'
import t from 'tap'
import { createDb, createPool } from '../../src/db/connect.js'
import { prepared } from '../../src/db/prepared.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const db = createDb(createPool({ connectionString: world.databaseUrl, max: 2, statementTimeoutMs: 10_000 }))
t.teardown(() => db.destroy())

const sum = (a: number, b: number) => prepared(sql<{ n: number }>`select ${a}::int + ${b}::int as n`)
const preparedHere = sql<{ statement: string }>`select statement from pg_prepared_statements order by prepare_time`

t.test('a marked statement is prepared once per connection and bound with each call’s values', async (t) => {
  await db.connection().execute(async (conn) => {
    t.same((await preparedHere.execute(conn)).rows, [], 'a new connection has nothing prepared')
    const answers = []
    for (const [a, b] of [[1, 2], [40, 2], [-5, 5]] as const) answers.push((await sum(a, b).execute(conn)).rows[0]!.n)
    t.same(answers, [3, 42, 0], 'each call binds its own values')
    const statements = (await preparedHere.execute(conn)).rows.map((r) => r.statement)
    t.equal(statements.length, 1, 'three calls, one prepared statement')
    t.match(statements[0], /^\/\* prepared \*\/ select \$1::int \+ \$2::int as n$/)
  })
})

t.test('an unmarked statement is sent as text and leaves nothing prepared', async (t) => {
  await db.connection().execute(async (conn) => {
    const before = (await preparedHere.execute(conn)).rows.length
    const { rows } = await sql<{ n: number }>`select ${20}::int + ${22}::int as n`.execute(conn)
    t.equal(rows[0]!.n, 42)
    t.equal((await preparedHere.execute(conn)).rows.length, before, 'no statement was prepared')
  })
})

t.test('each text is its own statement; an error in a prepared one leaves the connection usable', async (t) => {
  await db.connection().execute(async (conn) => {
    await prepared(sql`select ${'x'}::text as s`).execute(conn)
    await t.rejects(prepared(sql`select 1 / ${0}::int as boom`).execute(conn), { code: '22012' }, 'division by zero surfaces as an error')
    await t.rejects(prepared(sql`select 1 / ${0}::int as boom`).execute(conn), { code: '22012' }, 'and again, from the prepared statement')
    t.equal((await sum(2, 2).execute(conn)).rows[0]!.n, 4, 'the connection still answers')
    const statements = (await preparedHere.execute(conn)).rows.map((r) => r.statement.replace(/^\/\* prepared \*\/ /, ''))
    for (const text of ['select $1::text as s', 'select 1 / $1::int as boom', 'select $1::int + $2::int as n']) {
      t.equal(statements.filter((s) => s === text).length, 1, `prepared once: ${text}`)
    }
  })
})
