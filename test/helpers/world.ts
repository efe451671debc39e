import { createHash, randomBytes } from 'node:crypto'
import { readlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { createKey } from '../../src/auth/keys.js'
import type { ApiRole } from '../../src/auth/principal.js'
import type { QueueName } from '../../src/routing/index.js'
import { Redis } from 'ioredis'
import pg from 'pg'
import pino from 'pino'
import { buildApp } from '../../src/app.js'
import { loadConfig, type Config } from '../../src/config.js'
import { createDb, createPool, type Db } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { loggerOptions } from '../../src/logger.js'
import { createRuleSetRegistry, type RuleSetRegistry } from '../../src/rule-sets/registry.js'
import type { Tracing } from '../../src/telemetry/tracing.js'

export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

export interface World {
  name: string
  databaseUrl: string
  prefix: string
  config: Config
  db: Db
  pool: pg.Pool
  redis: Redis
  ruleSets: RuleSetRegistry
  /** An admin key; `app.inject` sends it unless a test gives its own Authorization header. */
  adminKey: string
  /** A key with this role and scope, created for the test. */
  key(role: ApiRole, opts?: { agencies?: string[] | null; queues?: QueueName[] | null; name?: string }): Promise<string>
  /** Every log line the app wrote, as text (for the personal-data checks). */
  logs: string[]
  app: FastifyInstance
  close(): Promise<void>
}

interface Tap {
  teardown(fn: () => unknown): void
}

/**
 * A world of its own for one test file: a fresh database (migrated), a BullMQ prefix nobody else
 * uses, and the app built on them. Everything is dropped at teardown.
 */
export async function createWorld(t: Tap, opts: { env?: Record<string, string>; now?: () => Date; redisUrl?: string; tracing?: Tracing } = {}): Promise<World> {
  const name = await createTestDatabase('t')
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${name}`
  const databaseUrl = url.toString()
  const prefix = `t-${name}`
  const redisUrl = opts.redisUrl ?? REDIS_URL
  const config = loadConfig({ DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, BULLMQ_PREFIX: prefix, LOG_LEVEL: 'trace', ...opts.env })

  // Roomier than the shipped settings, and no lock timeout: tests hold rows locked on purpose (a
  // worker's offer blocked mid-job) for as long as a loaded CI machine makes them. The lock timeout's
  // own tests (calls/group-commit, db/connect, faults/postgres-slow) use pools or processes of their own.
  const pool = createPool({ connectionString: databaseUrl, max: 10, statementTimeoutMs: 10_000 })
  const db = createDb(pool)
  await migrateToLatest(db)
  const ruleSets = await createRuleSetRegistry(db, { databaseUrl })
  // As main.ts's API connection (createRedis 'probe'), auto-pipelining included.
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true, enableAutoPipelining: true })
  redis.on('error', () => {})
  await redis.connect().catch(() => {})

  const logs: string[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk))
      cb()
    },
  })
  const logger = pino(loggerOptions('trace'), sink)
  const app = await buildApp({ config, db, redis, ruleSets, logger, ...(opts.now ? { now: opts.now } : {}), ...(opts.tracing ? { tracing: opts.tracing } : {}) })
  const { key: adminKey } = await createKey(db, { name: 'test-admin', role: 'admin', agencies: null, queues: null, expiresAt: null, createdBy: 'test' })
  // Most tests are about behaviour, not permissions: they act as admin unless they say otherwise
  // (pass `headers: { authorization: … }`, or `authorization: ''` for none).
  const inject = app.inject.bind(app)
  app.inject = ((o?: InjectOptions | string) => {
    if (o === undefined) return inject()
    const options: InjectOptions = typeof o === 'string' ? { url: o } : o
    const headers = { authorization: `Bearer ${adminKey}`, ...(options.headers ?? {}) }
    if (headers.authorization === '') delete (headers as Record<string, unknown>).authorization
    return inject({ ...options, headers })
  }) as typeof app.inject
  let keyCount = 0
  const key: World['key'] = async (role, o = {}) =>
    (await createKey(db, { name: o.name ?? `test-${role}-${++keyCount}`, role, agencies: o.agencies ?? null, queues: o.queues ?? null, expiresAt: null, createdBy: 'test' })).key

  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await app.close()
    await ruleSets.close()
    await db.destroy()
    await dropRedisPrefix(redisUrl, prefix).catch(() => {})
    redis.disconnect()
    const a = new pg.Client({ connectionString: PG_ADMIN_URL })
    await a.connect()
    await a.query(`drop database if exists ${name} with (force)`)
    await a.end()
  }
  t.teardown(close)
  return { name, databaseUrl, prefix, config, db, pool, redis, ruleSets, adminKey, key, logs, app, close }
}

// Pids mean something only on one machine, in one pid namespace (a container): test databases are
// named after both, `cadr_<kind>_<host>_<pid>_<random>`, and only this host's are ever swept.
const HOST_TAG = createHash('sha256').update(`${hostname()}:${pidNamespace()}`).digest('hex').slice(0, 6)
const TEST_DATABASE = /^cadr_([a-z])_([0-9a-f]{6})_(\d+)_[0-9a-f]+$/
let swept = false

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid')
  } catch {
    return ''
  }
}

/** A name for a test database of this kind, made by `pid` on this host. */
export function testDatabaseName(kind: string, opts: { pid?: number; host?: string } = {}): string {
  return `cadr_${kind}_${opts.host ?? HOST_TAG}_${opts.pid ?? process.pid}_${randomBytes(6).toString('hex')}`
}

/**
 * Creates an empty database for one test file and returns its name (`kind`: `t` for a world, `f`
 * for a fault world). A file that tap ends for running out of time may never run its teardown, so
 * the first call in each process also drops what such files left: the databases whose process is
 * gone and that nobody is connected to, with the BullMQ keys of a world's prefix on REDIS_URL.
 */
export async function createTestDatabase(kind: 't' | 'f'): Promise<string> {
  const name = testDatabaseName(kind)
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    if (!swept) {
      swept = true
      await dropOrphanDatabases(admin, ['t', 'f'])
    }
    await admin.query(`create database ${name}`)
  } finally {
    await admin.end()
  }
  return name
}

/**
 * Drops the test databases of these kinds that this host's processes made and left: their process
 * is gone and nobody is connected to them. Returns their names.
 */
export async function dropOrphanDatabases(admin: pg.Client, kinds: readonly string[]): Promise<string[]> {
  const { rows } = await admin.query<{ datname: string }>(
    `select datname from pg_database d where datname like 'cadr\\_%' and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)`,
  )
  const dropped: string[] = []
  for (const { datname } of rows) {
    const [, kind, host, pid] = TEST_DATABASE.exec(datname) ?? []
    if (!kind || !kinds.includes(kind) || host !== HOST_TAG || alive(Number(pid))) continue
    // Without force: a connection made since the check means someone still uses it. Another file
    // may be dropping the same one: either way, not this file's business.
    const ok = await admin.query(`drop database if exists ${pg.escapeIdentifier(datname)}`).then(
      () => true,
      () => false,
    )
    if (!ok) continue
    dropped.push(datname)
    // A world's BullMQ prefix (a fault world's keys die with its own redis-server).
    if (kind !== 'f') await dropRedisPrefix(REDIS_URL, `t-${datname}`).catch(() => {})
  }
  return dropped
}

/** Whether a process with this pid runs on this machine (EPERM: it does, as another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export async function dropRedisPrefix(redisUrl: string, prefix: string): Promise<void> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true })
  r.on('error', () => {})
  try {
    await r.connect()
    let cursor = '0'
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
      cursor = next
      if (keys.length) await r.del(...keys)
    } while (cursor !== '0')
  } finally {
    r.disconnect()
  }
}

/**
 * Polls a condition (for effects that cross processes); fails after `ms`. The deadline is on the
 * monotonic clock: CI's wall clock has been seen to jump seconds ahead mid-run.
 */
/** A worker made by a create…() that takes no job until its start(), started (src/main.ts starts them together). */
export async function running<T extends { start(): void }>(made: Promise<T>): Promise<T> {
  const w = await made
  w.start()
  return w
}

export async function eventually<T>(fn: () => Promise<T | undefined | false>, ms = 10_000, every = 20): Promise<T> {
  const deadline = performance.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`)
    await new Promise((r) => setTimeout(r, every))
  }
}

/**
 * Counts the statements sent on the pool's connections whose text contains `needle`: what reaches
 * Postgres, whatever caches sit in front of it. Install before the pool's first connection.
 */
export function countStatements(pool: pg.Pool, needle: string): () => number {
  let n = 0
  pool.on('connect', (client: pg.PoolClient) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown
    ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string } | undefined)?.text
      if (text?.includes(needle)) n++
      return query(...args)
    }
  })
  return () => n
}

/**
 * A connection of its own from `pool` with a transaction open, to hold rows or tables locked as
 * another instance or a session left open would. At teardown the connection is dropped, not put
 * back: never into the pool with the transaction open, even when an assertion threw first.
 */
export async function openTransaction(t: Tap, pool: pg.Pool): Promise<pg.PoolClient> {
  const client = await pool.connect()
  t.teardown(() => client.release(true))
  await client.query('begin')
  return client
}

/** A silent logger for relay/worker instances in tests. */
export const quietLog = pino({ level: 'silent' })

/** A logger at `level` whose lines the test reads back, parsed, as they are written. */
export function recordingLog<Line extends { msg: string }>(level: pino.Level = 'info'): { log: pino.Logger; lines: Line[] } {
  const lines: Line[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line) as Line)
      cb()
    },
  })
  return { log: pino({ level }, sink), lines }
}

/**
 * Prints a figure a test measured (a fault ledger, a count): on stderr, which tap shows under every
 * reporter, where a TAP comment shows under the tap reporter only (`.taprc` uses base, which keeps
 * CI's failures at the end of its output).
 */
export function say(line: string): void {
  process.stderr.write(`# ${line}\n`)
}
