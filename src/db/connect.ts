import { performance } from 'node:perf_hooks'
import { Kysely, PostgresDialect, type Transaction } from 'kysely'
import pg from 'pg'
import { prepareMarkedStatements } from './prepared.js'
import type { Database } from './schema.js'
import { withTimeout } from '../lib/timeout.js'
import { defaultQueryTimeoutMs, dropSilentQueries, lastAnsweredAt } from './silent-queries.js'

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
  /**
   * A query Postgres has not answered after this long is given up and its connection destroyed
   * (src/db/silent-queries.ts); a session left in a transaction this long without a word from us is
   * ended by Postgres. Above statementTimeoutMs, which ends every statement that runs too long while
   * Postgres can still say so. Unset: twice statementTimeoutMs.
   */
  queryTimeoutMs?: number
  applicationName?: string
  /** Told when a query is given up on. */
  log?: { warn(obj: object, msg: string): void }
}

/**
 * TCP keepalive for connections idle in the pool: one whose peer is gone (a host that froze, a
 * network that drops packets) is found within about 20 s (10 s idle, then a probe a second, ten
 * times: Node sets the interval and count beside the delay) and dropped before anybody is handed
 * it. A connection waiting for an answer is not helped by it (the kernel retransmits instead):
 * the query bound covers that.
 */
export const KEEPALIVE_DELAY_MS = 10_000

/** How long a connection of its own (dedicatedClient) waits for Postgres to answer its startup. */
export const DEDICATED_CONNECT_TIMEOUT_MS = 5000

/**
 * A long-lived connection outside the pool (the LISTEN connection, the feed bridge's lock).
 * keepAlive: a half-open connection would leave it deaf without an error. With a delay: without
 * one Node leaves the system's (two hours on Linux) and its 75 s between probes; with one it also
 * probes every second, ten times, so a vanished peer is found in about 20 s. A connect whose
 * startup is never answered (a frozen host) is given up too. The session options, so Postgres too
 * drops the session of a vanished client within seconds; `extraOptions` are the connection's own.
 */
export function dedicatedClient(o: { databaseUrl: string; applicationName: string; extraOptions?: string }): pg.Client {
  return new pg.Client({
    connectionString: withSessionOptions(o.databaseUrl, o.extraOptions),
    application_name: o.applicationName,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    connectionTimeoutMillis: DEDICATED_CONNECT_TIMEOUT_MS,
  })
}

/** The least idle_in_transaction_session_timeout a pool sets: above the relay's 2 s wait for Redis inside its transaction. */
export const IDLE_IN_TRANSACTION_FLOOR_MS = 5_000

/**
 * No JIT compilation. Postgres compiles a statement whose estimated cost passes jit_above_cost,
 * and a generic plan of a batch statement is costed for 100 JSON rows: once the tables had grown
 * (40,000 assignments), the routing context read was compiled on every execution, 45 ms of
 * Postgres CPU for a statement that runs in 2 ms. Our statements are all short; none gains from it.
 *
 * And Postgres's side of the keepalive above: a session whose client vanished (a frozen host, a
 * network that drops packets) keeps its locks (a feed bridge's advisory lock, an open
 * transaction's rows) until the server's TCP gives up on it, two hours of idle by default. With
 * these it probes after 10 s idle, a second apart, and gives up on a peer that acknowledges
 * nothing for 20 s, whether it was probing or sending (tcp_user_timeout, Linux, Postgres 12+;
 * with it set, Linux ends the probing at that time rather than counting probes). Any role may set
 * them; on a Unix-socket connection Postgres ignores them (they read 0).
 */
export const SESSION_OPTIONS = '-c jit=off -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=10 -c tcp_user_timeout=20000'

/**
 * The connection string with SESSION_OPTIONS (and `extra`, a connection's own) ahead of the
 * `options` it already gives (or PGOPTIONS): pg lets a URL's parameters win over its config, so ours
 * travel in the URL too, and a setting of the operator's comes later and still wins.
 */
export function withSessionOptions(connectionString: string, extra?: string): string {
  let url: URL
  try {
    url = new URL(connectionString)
  } catch {
    return connectionString // not a URL (config requires one): pg gets `options` from the pool config
  }
  const theirs = url.searchParams.get('options') ?? process.env.PGOPTIONS ?? ''
  url.searchParams.set('options', [SESSION_OPTIONS, extra, theirs].filter(Boolean).join(' '))
  return url.toString()
}

// The clients each pool has lent out, for closePool: pg-pool keeps its own list private.
const lentOut = new WeakMap<pg.Pool, Set<pg.PoolClient>>()

export function createPool(opts: PoolOptions): pg.Pool {
  const queryTimeoutMs = opts.queryTimeoutMs ?? defaultQueryTimeoutMs(opts.statementTimeoutMs)
  // A query bound at or below the statement timeout would cut statements Postgres lets run.
  if (queryTimeoutMs <= opts.statementTimeoutMs) throw new Error(`queryTimeoutMs (${queryTimeoutMs}) must be above statementTimeoutMs (${opts.statementTimeoutMs})`)
  const pool = new pg.Pool({
    // A session whose client gave up on it (a dropped connection whose close Postgres has not heard
    // of yet) would keep its transaction's locks: the rows a retry of the same call event inserts.
    // None of ours sits idle in a transaction for long: the outbox relay longest, while it waits up
    // to 2 s for Redis, hence the floor (a low statement timeout would otherwise end the relay's
    // session mid-send, and its rows would be sent again on every pass). In `options`, not a startup
    // parameter of its own, which a pooler such as PgBouncer refuses unless told to ignore it.
    connectionString: withSessionOptions(opts.connectionString, `-c idle_in_transaction_session_timeout=${Math.max(queryTimeoutMs, IDLE_IN_TRANSACTION_FLOOR_MS)}`),
    max: opts.max,
    // Fail fast when Postgres is unreachable so the API can answer 503 instead of hanging.
    connectionTimeoutMillis: 3000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    statement_timeout: opts.statementTimeoutMs,
    // pg leaves it out when 0: the server's own (none, by default) then applies.
    lock_timeout: opts.lockTimeoutMs ?? 0,
    application_name: opts.applicationName ?? 'cad-router',
    options: SESSION_OPTIONS,
  })
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {})
  // Every connection the pool holds, and those lent out (pg-pool keeps its own lists private).
  const held = new Set<pg.PoolClient>()
  const lent = new Set<pg.PoolClient>()
  // pg-pool listens for errors only while a client is idle in the pool. A checked-out client whose
  // backend goes away between two statements (pg_terminate_backend, a restart, a cut network)
  // emits 'error' with nobody listening — an uncaught exception that takes the process down. The
  // statement in flight, or the next one, fails on its own and the request answers 503; the
  // broken client is not reused (the pool drops clients that are no longer queryable, or were
  // ended, on release: a silent one is ended by dropSilentQueries).
  pool.on('connect', (client) => {
    client.on('error', () => {})
    prepareMarkedStatements(client)
    held.add(client)
    client.once('end', () => held.delete(client))
    dropSilentQueries(client, queryTimeoutMs, (err, sentAt) => {
      const idleDropped = dropIdleUnansweredSince(held, lent, sentAt)
      opts.log?.warn({ queryTimeoutMs: err.ms, idleDropped, applicationName: opts.applicationName ?? 'cad-router' }, err.message)
    })
  })
  lentOut.set(pool, lent)
  pool.on('acquire', (client) => lent.add(client))
  pool.on('release', (_err, client) => lent.delete(client))
  pool.on('remove', (client) => lent.delete(client))
  return pool
}

/**
 * When a query went unanswered, the pool's idle connections that have not heard from Postgres
 * since it was sent went through the same silence: a firewall or NAT that lost its state drops
 * their packets too, as does a network that has not come back. Each, handed out later, would keep
 * a caller waiting the whole query bound; one after another they keep the outbox relay (which takes
 * one at a time and backs off after each failure) from delivering for tens of seconds after the
 * network returned. They are dropped now, and new connections opened as needed, which costs a
 * reconnect if they were fine after all. A connection that answered since is kept.
 *
 * Each is failed as a broken socket fails it, at once: its client, no longer queryable, emits
 * 'error', on which pg-pool takes it out of the pool (pg's documented behaviour for an idle client)
 * and ends it, destroying the socket. (Destroying the socket alone would fail it a tick later, and
 * the next caller could be handed it meanwhile.) Returns how many were dropped.
 */
function dropIdleUnansweredSince(held: Set<pg.PoolClient>, lent: Set<pg.PoolClient>, since: number): number {
  let dropped = 0
  for (const client of held) {
    if (lent.has(client) || lastAnsweredAt(client as pg.Client) >= since) continue
    ;(client as pg.Client).connection.emit('error', new Error('idle through a silence of Postgres: dropped'))
    dropped++
  }
  return dropped
}

export interface ClosePoolOptions {
  /** performance.now() after which the close stops waiting for statements still running. */
  until: number
  /** How long ending their sessions may take after that. */
  terminateMs: number
  /** For the one connection that ends them. */
  connectionString: string
  log: { warn(obj: object, msg: string): void }
}

/**
 * Ends the pool, waiting until `until` at most for the clients still lent out: at shutdown, those
 * run statements of jobs the workers have handed back (src/workers/responder-worker.ts, drainOrReturn),
 * which wait on a lock or a slow Postgres for up to the statement time-out. Their sessions are then
 * ended (pg_terminate_backend) rather than left behind. Merely letting go of them is not enough:
 * the responder's offer is one statement outside any transaction (offerInOneStatement), and pg sends
 * its Sync with it, so Postgres commits it when it finishes whether or not the client is still
 * there — after another worker has taken the job. (A statement in a transaction would roll back,
 * as its COMMIT is never sent; ending the session covers both.) What was about to commit either
 * did, before the session ended, or does not; processing is idempotent, so the next worker finds
 * the work done or does it.
 */
const MAY_STILL_COMMIT = 'a statement among them may still commit (the job was handed back, and doing it twice changes nothing)'

export async function closePool(db: Db, pool: pg.Pool, opts: ClosePoolOptions): Promise<void> {
  const ended = db.destroy().then(() => true)
  const waited = (ms: number) => Promise.race([ended, new Promise<false>((r) => setTimeout(() => r(false), Math.max(0, ms)).unref())])
  if (await waited(opts.until - performance.now())) return
  // Not typed by @types/pg: the backend's pid, from the server's BackendKeyData at connect.
  const pids = [...(lentOut.get(pool) ?? [])].map((c) => (c as pg.PoolClient & { processID?: number | null }).processID).filter((p): p is number => typeof p === 'number')
  if (!pids.length) {
    opts.log.warn({}, 'the Postgres pool did not end in time, with no statement of ours running: exiting without it')
    return
  }
  const startedAt = performance.now()
  let terminated = 0
  const killer = new pg.Client({ connectionString: withSessionOptions(opts.connectionString), connectionTimeoutMillis: opts.terminateMs, application_name: 'cad-router-shutdown' })
  killer.on('error', () => {})
  try {
    const work = (async () => {
      await killer.connect()
      // With a timeout, pg_terminate_backend returns once the session is gone: nothing of it commits after.
      const { rows } = await killer.query<{ n: number }>('select count(*) filter (where pg_terminate_backend(pid, $2))::int as n from unnest($1::int[]) pid', [pids, Math.max(1, Math.floor(opts.terminateMs / 2))])
      terminated = rows[0]?.n ?? 0
    })()
    work.catch(() => {})
    await withTimeout(work, opts.terminateMs, `not done within ${opts.terminateMs} ms`)
    // Fewer ended than asked: a session that ended by itself meanwhile, or pids that are not the
    // server's (a pooler such as PgBouncer in between), whose statements run on to their time-out.
    opts.log.warn(
      { sessions: pids.length, terminated, ms: Math.round(performance.now() - startedAt) },
      terminated === pids.length
        ? 'Postgres statements of handed-back jobs still running at shutdown: their sessions ended, their work rolled back'
        : `Postgres statements of handed-back jobs still running at shutdown: not every session could be ended; ${MAY_STILL_COMMIT}`,
    )
  } catch (err) {
    opts.log.warn({ sessions: pids.length, err: { message: (err as Error).message } }, `could not end the Postgres sessions still running at shutdown; ${MAY_STILL_COMMIT}`)
  } finally {
    void killer.end().catch(() => {})
  }
  // The ended sessions' clients fail and leave the pool, which then ends; the exit does not wait long for it.
  await waited(Math.min(200, opts.terminateMs))
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}
