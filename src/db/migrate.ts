import { Migrator, sql, type MigrationResultSet, type Kysely } from 'kysely'
import pg from 'pg'
import { migrations } from '../../migrations/index.js'
import { createDb, createPool, type Db } from './connect.js'
import { dropSilentQueries, PostgresSilentError } from './silent-queries.js'
import { withTimeout } from '../lib/timeout.js'

export class MigrationError extends Error {
  override name = 'MigrationError'
}

const provider = { getMigrations: async () => migrations }

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the migrator works on any schema
function migrator(db: Kysely<any>): Migrator {
  return new Migrator({ db, provider })
}

/**
 * A database handle for migrating, with a connection of its own and no lock timeout: a process that
 * starts beside another waits for that one's migrations (the migrator's lock), which may take longer
 * than the service's lock timeout. The statement timeout still bounds that wait, and how long a
 * migration's DDL may queue for its table lock while every statement behind it waits too (the
 * service at start: its statement timeout; `npm run migrate`: 60 s). Destroy it when done.
 */
export function createMigrationDb(connectionString: string, statementTimeoutMs = 60_000, queryTimeoutMs?: number): Db {
  return createDb(createPool({ connectionString, max: 1, statementTimeoutMs, ...(queryTimeoutMs ? { queryTimeoutMs } : {}), applicationName: 'cad-router-migrate' }))
}

/**
 * The oldest Postgres the service runs on. 13 brought xid8 and pg_current_xact_id (the feed's
 * order, migration 0010); 14 idle_session_timeout (the feed bridge's lease: on 13 its connection
 * is refused, and no instance relays wake-ups) and pg_terminate_backend with a time-out (shutdown).
 */
export const MIN_POSTGRES_VERSION_NUM = 140000

/** Why this server is not one the service runs on, or undefined. */
export function unsupportedPostgres(versionNum: number, version: string): string | undefined {
  return versionNum >= MIN_POSTGRES_VERSION_NUM ? undefined : `Postgres ${version} is not supported: cad-router needs Postgres 14 or later`
}

export interface MigrateOptions {
  /**
   * The database is at a later release's schema: it has applied migrations this code does not know
   * (their names), after every one it does. Nothing is migrated, and the process starts.
   */
  onNewerSchema?: (names: string[]) => void
}

/**
 * Applies pending migrations; throws (so the process exits non-zero) when one fails, or when the
 * server is too old. A database a later release has migrated is left as it is, and this release
 * runs on it: every migration is written so the release before runs on its schema (README,
 * "Running the roles separately"), so a rolled-back release, or one of its instances restarting
 * during a rolling upgrade, must start rather than crash-loop where routing is needed most.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see migrator()
export async function migrateToLatest(db: Kysely<any>, opts: MigrateOptions = {}): Promise<string[]> {
  const { rows } = await sql<{ num: string; version: string }>`select current_setting('server_version_num') as num, current_setting('server_version') as version`.execute(db)
  const unsupported = unsupportedPostgres(Number(rows[0]?.num), rows[0]?.version ?? 'of an unknown version')
  if (unsupported) throw new MigrationError(unsupported)
  const newer = await newerSchema(db)
  if (newer) {
    opts.onNewerSchema?.(newer)
    return []
  }
  const { error, results }: MigrationResultSet = await migrator(db).migrateToLatest()
  const failed = results?.find((r) => r.status === 'Error')
  if (error || failed) {
    // A later release may have migrated while this process waited for the migrator's lock.
    const since = await newerSchema(db).catch(() => undefined)
    if (since) {
      opts.onNewerSchema?.(since)
      return []
    }
    const reason = error instanceof Error ? error.message : String(error ?? 'unknown error')
    throw new MigrationError(failed ? `migration ${failed.migrationName} failed: ${reason}` : `migrations failed: ${reason}`, { cause: error })
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
}

/**
 * The migrations of a later release this database has applied, when it has applied every one this
 * code knows and those come after them all; undefined when it has none of a later release. A
 * database with unknown migrations that is not that (one of ours still pending, or an unknown name
 * among ours: another branch's) is refused: which schema it holds cannot be told.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see migrator()
async function newerSchema(db: Kysely<any>): Promise<string[] | undefined> {
  const { rows: table } = await sql<{ present: boolean }>`select to_regclass('kysely_migration') is not null as present`.execute(db)
  if (!table[0]?.present) return undefined
  const { rows } = await sql<{ name: string }>`select name from kysely_migration`.execute(db)
  const executed = new Set(rows.map((r) => r.name))
  const known = Object.keys(migrations).sort()
  const unknown = [...executed].filter((name) => !(name in migrations)).sort()
  if (!unknown.length) return undefined
  const pending = known.filter((name) => !executed.has(name))
  const last = known.at(-1) ?? ''
  if (pending.length || unknown.some((name) => name <= last)) {
    throw new MigrationError(
      `the database has migrations this release does not know (${unknown.join(', ')})${pending.length ? ` and lacks some it needs (${pending.join(', ')})` : ', not all after its own'}: it is not a later release's schema this release can run on`,
    )
  }
  return unknown
}

/** Names of migrations the code knows that the database has not applied yet (readiness). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see migrator()
export async function pendingMigrations(db: Kysely<any>): Promise<string[]> {
  const all = await migrator(db).getMigrations()
  return all.filter((m) => m.executedAt === undefined).map((m) => m.name)
}

/** A Postgres that did not answer ensureDatabase within its bound: a frozen host, a network that drops packets. */
export class PostgresStartTimeoutError extends Error {
  override name = 'PostgresStartTimeoutError'
}

/**
 * Creates the database named in the URL when it does not exist yet, so a fresh machine just starts.
 * Each step (connecting, the creation) gives up after `timeoutMs`: against a Postgres that accepts
 * connections and never answers, the process fails at start (its supervisor starts it again)
 * instead of hanging there.
 */
export async function ensureDatabase(connectionString: string, timeoutMs = 10_000): Promise<boolean> {
  const url = new URL(connectionString)
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''))
  if (!name) return false
  const client = (connectionString: string) => {
    const c = new pg.Client({ connectionString, connectionTimeoutMillis: timeoutMs })
    dropSilentQueries(c, timeoutMs)
    return c
  }
  const silent = (what: string, err: unknown) => {
    // pg's words for a connect it gave up on (connectionTimeoutMillis); dropSilentQueries' error for
    // a query. Not any message naming a time-out: a statement time-out is the server answering.
    const message = (err as Error).message ?? ''
    return err instanceof PostgresSilentError || /^(timeout expired|Connection terminated due to connection timeout)$/.test(message) ? new PostgresStartTimeoutError(`no answer from Postgres within ${timeoutMs} ms ${what}`, { cause: err }) : err
  }
  // Over a silent connection pg's end never completes.
  const end = (c: pg.Client) => withTimeout(c.end(), 1000).catch(() => {})
  const probe = client(connectionString)
  try {
    await probe.connect()
    return false
  } catch (err) {
    if ((err as { code?: string }).code !== '3D000') throw silent('to a connect', err) // 3D000: database does not exist
  } finally {
    await end(probe)
  }
  url.pathname = '/postgres'
  const admin = client(url.toString())
  try {
    await admin.connect()
    await admin.query(`create database ${pg.escapeIdentifier(name)}`)
  } catch (err) {
    // Created concurrently by another process: 42P04 when it had committed, 23505 (on
    // pg_database's unique index) when both were creating it at the same moment.
    const code = (err as { code?: string }).code
    if (code !== '42P04' && code !== '23505') throw silent(`creating database ${name}`, err)
  } finally {
    await end(admin)
  }
  return true
}
