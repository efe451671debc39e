import { Kysely, PostgresDialect, type Transaction } from 'kysely'
import pg from 'pg'
import { prepareMarkedStatements } from './prepared.js'
import type { Database } from './schema.js'

// bigint (int8) ids and counts come back as strings by default; ours fit in a double comfortably.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v))

export type Db = Kysely<Database>
/** What repository functions take first: the database, or a transaction on it. */
export type Executor = Kysely<Database> | Transaction<Database>

export interface PoolOptions {
  connectionString: string
  max: number
  statementTimeoutMs: number
  /** A statement that waits longer for a lock fails with 55P03 (lock_not_available); 0 or unset: no limit of its own. */
  lockTimeoutMs?: number
  applicationName?: string
}

/**
 * No JIT compilation. Postgres compiles a statement whose estimated cost passes jit_above_cost,
 * and a generic plan of a batch statement is costed for 100 JSON rows: once the tables had grown
 * (40,000 assignments), the routing context read was compiled on every execution, 45 ms of
 * Postgres CPU for a statement that runs in 2 ms. Our statements are all short; none gains from it.
 */
export const SESSION_OPTIONS = '-c jit=off'

/**
 * The connection string with SESSION_OPTIONS ahead of the `options` it already gives (or
 * PGOPTIONS): pg lets a URL's parameters win over its config, so ours travel in the URL too, and a
 * setting of the operator's comes later and still wins.
 */
export function withSessionOptions(connectionString: string): string {
  let url: URL
  try {
    url = new URL(connectionString)
  } catch {
    return connectionString // not a URL (config requires one): pg gets `options` from the pool config
  }
  const theirs = url.searchParams.get('options') ?? process.env.PGOPTIONS ?? ''
  url.searchParams.set('options', [SESSION_OPTIONS, theirs].filter(Boolean).join(' '))
  return url.toString()
}

export function createPool(opts: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: withSessionOptions(opts.connectionString),
    max: opts.max,
    // Fail fast when Postgres is unreachable so the API can answer 503 instead of hanging.
    connectionTimeoutMillis: 3000,
    idleTimeoutMillis: 30_000,
    statement_timeout: opts.statementTimeoutMs,
    // pg leaves it out when 0: the server's own (none, by default) then applies.
    lock_timeout: opts.lockTimeoutMs ?? 0,
    application_name: opts.applicationName ?? 'cad-router',
    options: SESSION_OPTIONS,
  })
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {})
  // pg-pool listens for errors only while a client is idle in the pool. A checked-out client whose
  // backend goes away between two statements (pg_terminate_backend, a restart, a cut network)
  // emits 'error' with nobody listening — an uncaught exception that takes the process down. The
  // statement in flight, or the next one, fails on its own and the request answers 503; the
  // broken client is not reused (the pool drops clients that are no longer queryable on release).
  pool.on('connect', (client) => {
    client.on('error', () => {})
    prepareMarkedStatements(client)
  })
  return pool
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}
