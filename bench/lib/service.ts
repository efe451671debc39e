/**
 * Runs cad-router the way production does: `node dist/src/main.js` child processes (api, and
 * relay+worker) against a fresh database created for the run and dropped after it, and a BullMQ
 * prefix of its own in the shared Redis (its keys are deleted after the run).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import pg from 'pg'
import { withSessionOptions } from '../../src/db/connect.js'
import { sleep } from './stats.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** BENCH_SERVICE_DIR: measure another checkout's build (its dist/) with these benchmarks. */
export const SERVICE_DIR = process.env.BENCH_SERVICE_DIR ?? ROOT
const MAIN = `${SERVICE_DIR.replace(/\/?$/, '/')}dist/src/main.js`
/** BENCH_NODE_ARGS: extra node flags for the service processes, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)
/** Settings for the service processes, e.g. `INGEST_BATCH_CONCURRENCY=4,INGEST_BATCH_MAX=64`: to try a tuning. */
const SERVICE_ENV = Object.fromEntries(
  (process.env.BENCH_SERVICE_ENV ?? '')
    .split(',')
    .filter(Boolean)
    .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
)
export const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'

/** Everything started and not yet stopped: an interrupted run still cleans up after itself. */
const live = new Set<{ procs: ServiceProcess[]; stop: () => Promise<void> }>()
let handlersInstalled = false
function installHandlers(): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.once('SIGINT', () => {
    console.error('\ninterrupted: stopping the service processes and dropping the databases…')
    void Promise.allSettled([...live].map((d) => d.stop())).then(() => process.exit(130))
  })
  // Last resort (a crash): no child outlives the bench process.
  process.on('exit', () => {
    for (const d of live) for (const p of d.procs) if (p.child.exitCode === null) p.child.kill('SIGKILL')
  })
}

export interface ServiceProcess {
  role: string
  child: ChildProcess
  pid: number
  port?: number
  url?: string
  /** The last lines it wrote (warnings and errors: LOG_LEVEL is warn). */
  output: string[]
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** CPU ticks (user + system) a process has used so far; 0 once it has exited. */
function ticksOf(pid: number | string, withReapedChildren = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th,
    // then cutime and cstime, the time of children the process has waited for.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(f[11]) + Number(f[12]) + (withReapedChildren ? Number(f[13]) + Number(f[14]) : 0)
  } catch {
    return 0 // the process has exited: its time is no longer counted anywhere
  }
}

const USER_HZ = 100 // the unit of /proc/<pid>/stat times on Linux

/** CPU seconds (user + system) these processes have used so far, read from /proc. */
export function cpuSecondsOf(pids: readonly number[]): number {
  return pids.reduce((s, pid) => s + ticksOf(pid), 0) / USER_HZ
}

/** CPU seconds used so far by every process named `comm`; null when the server at `url` is not on this machine. */
function localCpuSeconds(comm: string, url: string, withReapedChildren: boolean): number | null {
  if (!['127.0.0.1', 'localhost', '[::1]', ''].includes(new URL(url).hostname)) return null
  let ticks = 0
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) ticks += ticksOf(pid, withReapedChildren)
    } catch {
      // gone between the listing and the read
    }
  }
  return ticks / USER_HZ
}

/**
 * CPU seconds used so far by every local Postgres process. A backend that exits takes its time out
 * of /proc; the postmaster's reaped-children time holds it from then on, so a run whose connections
 * close (the raw baseline's) is still counted.
 */
export const postgresCpuSeconds = (): number | null => localCpuSeconds('postgres', PG_ADMIN_URL, true)

/** CPU seconds used so far by the local Redis (BullMQ's scripts run there). */
export const redisCpuSeconds = (): number | null => localCpuSeconds('redis-server', REDIS_URL, false)

/**
 * ANALYZE the run's tables once the warm-up has filled them, as autovacuum does on a server that
 * has it on (the default; these machines have it off). Without it, a generic plan a pooled
 * connection cached while the tables were nearly empty (sequential scans) is kept all run long,
 * and a lookup by primary key grows with the table: the repeat check cost 0.9 ms a call instead
 * of 0.04 ms by the end of a 40 s latency run.
 */
export async function analyzeAfterWarmUp(pool: pg.Pool): Promise<void> {
  await pool.query('analyze')
}

/** RSS of a process in bytes, read from /proc (Linux). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

export interface Deployment {
  name: string
  databaseUrl: string
  prefix: string
  adminKey: string
  apis: ServiceProcess[]
  workers: ServiceProcess[]
  /** A pool on the run's database, for the benchmark's own reads. */
  pool: pg.Pool
  stop(): Promise<void>
}

export interface DeployOptions {
  apis?: number
  workers?: number
  env?: Record<string, string>
}

/** A fresh, empty database `bench_<id>` on the benchmarks' Postgres; drop() removes it, forcing its connections out. */
export async function createBenchDatabase(id: string): Promise<{ databaseUrl: string; drop(): Promise<void> }> {
  const dbName = `bench_${id}`.toLowerCase()
  const admin = async (statement: string): Promise<void> => {
    const a = new pg.Client({ connectionString: PG_ADMIN_URL })
    await a.connect()
    try {
      await a.query(statement)
    } finally {
      await a.end()
    }
  }
  await admin(`create database ${dbName}`)
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${dbName}`
  // BENCH_KEEP_DATABASES=1 leaves them for a look afterwards (explain, pg_stat_statements); drop them by hand.
  const keep = process.env.BENCH_KEEP_DATABASES === '1'
  const drop = async (): Promise<void> => {
    if (keep) console.error(`  kept database ${dbName}`)
    else await admin(`drop database if exists ${dbName} with (force)`).catch(() => {})
  }
  return { databaseUrl: url.toString(), drop }
}

/** Creates the database, starts the processes and waits until every one of them is ready. */
export async function deploy(name: string, opts: DeployOptions = {}): Promise<Deployment> {
  const id = `${name}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
  const prefix = `bench-${id}`
  const adminKey = `cadr_${randomBytes(32).toString('base64url')}`
  const database = await createBenchDatabase(id)
  const { databaseUrl } = database
  const procs: ServiceProcess[] = []
  // Without JIT, like the service's own connections (its per-second probes would be compiled otherwise).
  const pool = new pg.Pool({ connectionString: withSessionOptions(databaseUrl), max: 4 })

  const baseEnv = {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'production',
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    BULLMQ_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    ADMIN_API_KEY: adminKey,
    RATE_LIMIT_PER_MINUTE: '100000000',
    ...opts.env,
    ...SERVICE_ENV,
  }

  const start = (role: string, env: Record<string, string>): ServiceProcess => {
    const child = spawn(process.execPath, [...NODE_ARGS, MAIN], { env: { ...baseEnv, ...env, ROLE: role }, stdio: ['ignore', 'pipe', 'pipe'] })
    const p: ServiceProcess = { role, child, pid: child.pid!, output: [] }
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line.trim()) p.output.push(line)
      if (p.output.length > 50) p.output.splice(0, p.output.length - 50)
    }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    procs.push(p)
    return p
  }

  const stop = async (): Promise<void> => {
    live.delete(entry)
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve()
            const kill = setTimeout(() => p.child.kill('SIGKILL'), 15_000)
            p.child.once('exit', () => {
              clearTimeout(kill)
              resolve()
            })
            p.child.kill('SIGTERM')
          }),
      ),
    )
    await pool.end().catch(() => {})
    await database.drop()
    await deleteKeys(`${prefix}:*`)
  }

  const entry = { procs, stop }
  live.add(entry)
  installHandlers()
  try {
    const apis: ServiceProcess[] = []
    const workers: ServiceProcess[] = []
    // The first process migrates the database; the others start once it is ready.
    for (let i = 0; i < (opts.apis ?? 1); i++) {
      const port = await freePort()
      const p = start('api', { PORT: String(port) })
      p.port = port
      p.url = `http://127.0.0.1:${port}`
      await waitReady(p)
      apis.push(p)
    }
    for (let i = 0; i < (opts.workers ?? 1); i++) workers.push(start('relay,worker', {}))
    if (workers.length) await waitWorkers(prefix, workers)
    return { name, databaseUrl, prefix, adminKey, apis, workers, pool, stop }
  } catch (err) {
    for (const p of procs) if (p.output.length) console.error(`[${p.role} ${p.pid}]\n${p.output.slice(-10).join('\n')}`)
    await stop()
    throw err
  }
}

async function waitReady(p: ServiceProcess, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (p.child.exitCode !== null) throw new Error(`${p.role} process exited with ${p.child.exitCode}: ${p.output.slice(-5).join(' | ')}`)
    try {
      const res = await fetch(`${p.url}/readyz`)
      if (res.status === 200) return
    } catch {
      // not listening yet
    }
    await sleep(100)
  }
  throw new Error(`${p.role} process not ready within ${timeoutMs} ms`)
}

/** A worker process is ready once BullMQ lists its connections as workers of the police queue. */
async function waitWorkers(prefix: string, workers: ServiceProcess[], timeoutMs = 60_000): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 })
  try {
    const until = Date.now() + timeoutMs
    while (Date.now() < until) {
      for (const w of workers) if (w.child.exitCode !== null) throw new Error(`worker process exited with ${w.child.exitCode}: ${w.output.slice(-5).join(' | ')}`)
      // BullMQ names a worker's blocking connection `${prefix}:${base64(queue)}` (as Queue.getWorkers does).
      const list = String(await redis.client('LIST'))
      const name = `${prefix}:${Buffer.from('police').toString('base64')}`
      const n = list.split('\n').filter((l) => l.includes(`name=${name} `) || l.includes(`name=${name}:w:`)).length
      if (n >= workers.length) return
      await sleep(100)
    }
    throw new Error(`worker processes not ready within ${timeoutMs} ms`)
  } finally {
    redis.disconnect()
  }
}

export async function deleteKeys(pattern: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 })
  try {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      if (keys.length) await redis.unlink(...keys)
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}

/** A sample of the service's Prometheus metrics (admin key), by its full name with labels; undefined when absent. */
export async function scrapeMetric(url: string, key: string, name: string): Promise<number | undefined> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${key}` } })
  const text = await res.text()
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const m = new RegExp(`^${escaped}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text)
  return m ? Number(m[1]) : undefined
}
