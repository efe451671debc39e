import { createHash } from 'node:crypto'
import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, sql, type RawBuilder } from 'kysely'
import type pg from 'pg'

/**
 * Prepared statements for the hot paths. Postgres plans a statement every time it arrives as text;
 * for ingest's few large statements (the batch write, the routing context) planning cost about a
 * third of their time. A statement marked with `prepared` is sent as a named statement instead:
 * parsed and planned once per connection, then only bound and executed. Kysely has no notion of
 * this, so the mark travels in the SQL text (a comment) and the pool's clients act on it.
 *
 * Only statements whose text takes a bounded number of shapes may be marked (arrays and JSON as
 * single parameters, never one placeholder per row): every shape stays prepared on its connection
 * for the connection's life. Marked statements name their columns rather than `select *`, so a
 * migration that adds a column never makes a prepared statement fail on a changed row type.
 */
const MARK = '/* prepared */'

/** The statement, marked to be prepared once per connection. */
export function prepared<T>(statement: RawBuilder<T>): RawBuilder<T> {
  return sql<T>`${sql.raw(MARK)} ${statement}`
}

// One name per text for the process's life: the texts are bounded (see above), so is this map.
const names = new Map<string, string>()

function nameFor(text: string): string {
  let name = names.get(text)
  if (!name) {
    name = `cadr_${createHash('sha256').update(text).digest('base64url').slice(0, 24)}`
    names.set(text, name)
  }
  return name
}

/**
 * Makes a pool client send marked statements as named ones. pg prepares a name on first use on
 * each connection and afterwards sends only Bind/Execute.
 */
export function prepareMarkedStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown
  // pg's query() has many overloads; this wrapper passes every call through unchanged except
  // (text, values) calls whose text carries the mark, which become (config) calls with a name.
  ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const [text, values] = args
    if (typeof text === 'string' && Array.isArray(values) && text.startsWith(MARK)) {
      return query({ name: nameFor(text), text, values }, ...args.slice(2))
    }
    return query(...args)
  }
}

// Compiles without a connection (Kysely's "compile only" setup): fragments, never whole statements.
const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
})

const fragments = new Map<string, RawBuilder<unknown>>()

/**
 * A fragment without parameters (a column list, a table name), compiled to its text once, the first
 * time `key` is asked for. Kysely builds and compiles a statement on every execution, and a column
 * list of `sql.ref`s costs a parsed, frozen node tree per column each time: on the hot paths (every
 * offer, console move and ingest batch) that was most of Kysely's share of the CPU. The text is the
 * same as before.
 */
export function fixed(key: string, make: () => RawBuilder<unknown>): RawBuilder<unknown> {
  let fragment = fragments.get(key)
  if (!fragment) {
    const { sql: text, parameters } = make().compile(compiler)
    if (parameters.length) throw new Error(`fixed(): the fragment ${key} has parameters`)
    fragment = sql.raw(text)
    fragments.set(key, fragment)
  }
  return fragment
}
