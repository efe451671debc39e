/**
 * Ingest throughput: sustained POST /v1/call-events (the mix of lib/events.ts) from N keep-alive
 * clients against one API process, beside the raw limit measured in the same run on the same
 * database: the same number of rows per event inserted by N clients in transactions (BEGIN, one
 * multi-row INSERT, COMMIT) — no HTTP, no validation, no routing.
 */
import { availableParallelism } from 'node:os'
import pg from 'pg'
import { createCallService } from '../src/calls/service.js'
import { callEventSchema } from '../src/calls/schemas.js'
import { createDb, createPool } from '../src/db/connect.js'
import { createRuleSetRegistry } from '../src/rule-sets/registry.js'
import { createEventStream } from './lib/events.js'
import { hammer } from './lib/load.js'
import type { Row } from './lib/report.js'
import { analyzeAfterWarmUp, cpuSecondsOf, deploy, postgresCpuSeconds, scrapeMetric } from './lib/service.js'

export interface IngestOptions {
  seconds: number
  connections: number
  log: (line: string) => void
}

export const WRITE_TABLES = ['calls', 'call_events', 'decisions', 'assignments', 'assignment_transitions', 'outbox'] as const

export async function countRows(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(`select (${WRITE_TABLES.map((t) => `(select count(*) from ${t})`).join(' + ')}) as n`)
  return Number(rows[0]!.n)
}

/**
 * N clients committing `rowsPerTx`-row transactions as fast as they can: the rows in one multi-row
 * INSERT (3 round trips), or with `perRow` one INSERT each (n + 2 round trips, the shape of the
 * issue's planning figure, 1,700 commits/s for 3-row transactions).
 */
export async function rawLimit(databaseUrl: string, opts: { seconds: number; connections: number; rowsPerTx: number; perRow?: boolean }): Promise<number> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: opts.connections })
  try {
    await pool.query('create table if not exists bench_raw (id bigint generated always as identity primary key, k text not null, payload jsonb not null, at timestamptz not null default now())')
    const stream = createEventStream({ seed: 7 })
    const small = JSON.stringify({ queue: 'police', role: 'primary', status: 'queued', actor: 'router' })
    const n = Math.max(1, Math.round(opts.rowsPerTx))
    const values = Array.from({ length: n }, (_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ')
    const sql = `insert into bench_raw (k, payload) values ${values}`
    const oneRow = 'insert into bench_raw (k, payload) values ($1, $2)'
    let commits = 0
    const until = Date.now() + opts.seconds * 1000
    const clientLoop = async (): Promise<void> => {
      const client = await pool.connect()
      try {
        while (Date.now() < until) {
          const e = stream.next()
          const params: string[] = []
          for (let i = 0; i < n; i++) params.push(`${e.eventId}-${i}`, i === 0 ? JSON.stringify(e) : small)
          await client.query('begin')
          if (opts.perRow) for (let i = 0; i < n; i++) await client.query(oneRow, params.slice(2 * i, 2 * i + 2))
          else await client.query(sql, params)
          await client.query('commit')
          commits++
        }
      } finally {
        client.release()
      }
    }
    const start = performance.now()
    await Promise.all(Array.from({ length: opts.connections }, clientLoop))
    return commits / ((performance.now() - start) / 1000)
  } finally {
    await pool.end()
  }
}

/**
 * Where ingest spends its time: the call service in this process (no HTTP), one event at a time,
 * counting the statements it sends to Postgres (each a round trip).
 */
export async function statementsPerIngest(databaseUrl: string, events = 100): Promise<{ statements: number; msPerEvent: number }> {
  const pool = createPool({ connectionString: databaseUrl, max: 2, statementTimeoutMs: 5000 })
  let queries = 0
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown
    // Counting wrapper: pg's overloads cannot be re-declared without widening to unknown.
    ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      queries++
      return query(...args)
    }
  })
  const db = createDb(pool)
  try {
    const calls = createCallService({ db, ruleSets: await createRuleSetRegistry(db), followUpDeadlineHours: 72 })
    const stream = createEventStream({ seed: 13 })
    const batch = Array.from({ length: events }, () => callEventSchema.parse(stream.next()))
    await calls.ingest(batch[0]!) // connections and the rule set warm
    queries = 0
    const start = performance.now()
    for (const e of batch.slice(1)) await calls.ingest(e)
    return { statements: queries / (events - 1), msPerEvent: (performance.now() - start) / (events - 1) }
  } finally {
    await db.destroy()
  }
}

export async function runIngest(opts: IngestOptions): Promise<Row[]> {
  // The API alone: this measures ingest, not the relay or the workers competing for the CPU.
  const d = await deploy('ingest', { apis: 1, workers: 0, env: { DATABASE_POOL_SIZE: String(opts.connections + 4) } })
  try {
    const url = d.apis[0]!.url!
    const warm = Math.max(2, Math.round(opts.seconds / 5))
    opts.log(`  ingest: warm-up ${warm} s`)
    const w = await hammer(url, d.adminKey, { connections: opts.connections, seconds: warm, seed: 11 })
    await analyzeAfterWarmUp(d.pool)
    opts.log(`  ingest: ${opts.seconds} s at ${opts.connections} connections`)
    const before = await countRows(d.pool)
    const batches = () => Promise.all(['cad_router_ingest_batch_events_sum', 'cad_router_ingest_batch_events_count'].map((m) => scrapeMetric(url, d.adminKey, m)))
    const [events0 = 0, tx0 = 0] = await batches()
    const apiPid = d.apis[0]!.pid
    const cpu0 = { api: cpuSecondsOf([apiPid]), postgres: postgresCpuSeconds(), bench: process.cpuUsage() }
    const r = await hammer(url, d.adminKey, { connections: opts.connections, seconds: opts.seconds, seed: 12 })
    const cpu1 = { api: cpuSecondsOf([apiPid]), postgres: postgresCpuSeconds() }
    const benchCpu = process.cpuUsage(cpu0.bench)
    const [events1 = 0, tx1 = 0] = await batches()
    const perTransaction = (events1 - events0) / Math.max(1, tx1 - tx0)
    const rowsPerEvent = (await countRows(d.pool) - before) / Math.max(1, r.ok)
    opts.log(`  ingest: ${Math.round(r.perSecond)}/s, ${r.non2xx + w.non2xx} non-2xx, ${r.errors + w.errors} errors; ${rowsPerEvent.toFixed(2)} rows per event`)
    opts.log(`  ingest: raw limit, ${Math.round(rowsPerEvent)}-row transactions at ${opts.connections} clients, ${opts.seconds} s`)
    const rawCpu0 = postgresCpuSeconds()
    const raw = await rawLimit(d.databaseUrl, { seconds: opts.seconds, connections: opts.connections, rowsPerTx: rowsPerEvent })
    const rawCpu1 = postgresCpuSeconds()
    opts.log(`  ingest: raw limit again, one INSERT per row, ${opts.seconds} s`)
    const rawPerRow = await rawLimit(d.databaseUrl, { seconds: opts.seconds, connections: opts.connections, rowsPerTx: rowsPerEvent, perRow: true })
    const diag = await statementsPerIngest(d.databaseUrl)
    const ratio = r.perSecond / raw
    // Per stored event: ms of CPU, and how busy the whole machine was (100 % = every core).
    const perEvent = (seconds: number | null) => (seconds === null ? NaN : (seconds * 1000) / Math.max(1, r.ok))
    const cpu = {
      api: perEvent(cpu1.api - cpu0.api),
      postgres: perEvent(cpu1.postgres === null || cpu0.postgres === null ? null : cpu1.postgres - cpu0.postgres),
      load: perEvent((benchCpu.user + benchCpu.system) / 1e6),
      raw: rawCpu0 === null || rawCpu1 === null ? NaN : ((rawCpu1 - rawCpu0) * 1000) / (raw * opts.seconds),
    }
    const busy = ((cpu.api + (Number.isNaN(cpu.postgres) ? 0 : cpu.postgres) + cpu.load) * r.perSecond) / 10 / availableParallelism()
    // What Postgres alone allows: every core doing nothing but its work per event (API and load generator free).
    const ceiling = (availableParallelism() * 1000) / cpu.postgres
    const errors = r.non2xx + r.errors + r.timeouts + w.non2xx + w.errors + w.timeouts
    return [
      { bench: 'ingest', metric: `POST /v1/call-events, ${opts.connections} clients`, value: r.perSecond, unit: 'ev/s', baseline: raw, ratio, target: '≥ 0.85× raw', pass: ratio >= 0.85 },
      { bench: 'ingest', metric: 'the same, against the raw limit with one INSERT per row', value: r.perSecond, unit: 'ev/s', baseline: rawPerRow, ratio: r.perSecond / rawPerRow },
      { bench: 'ingest', metric: 'errors (non-2xx, socket, time-out)', value: errors, target: '0', pass: errors === 0 },
      { bench: 'ingest', metric: 'rows inserted per event', value: rowsPerEvent },
      { bench: 'ingest', metric: 'events per transaction under load (group commit)', value: perTransaction },
      { bench: 'ingest', metric: 'CPU per event: API / Postgres / load generator', value: `${cpu.api.toFixed(2)} / ${Number.isNaN(cpu.postgres) ? 'n/a' : cpu.postgres.toFixed(2)} / ${cpu.load.toFixed(2)} ms` },
      { bench: 'ingest', metric: 'machine CPU busy with these three (all cores = 100 %)', value: busy, unit: '%' },
      { bench: 'ingest', metric: 'raw limit: Postgres CPU per transaction', value: cpu.raw, unit: 'ms' },
      { bench: 'ingest', metric: "Postgres's ceiling: all cores ÷ its CPU per event", value: ceiling, unit: 'ev/s', baseline: raw, ratio: ceiling / raw },
      { bench: 'ingest', metric: 'Postgres statements per event, one at a time (raw: 3)', value: diag.statements },
      { bench: 'ingest', metric: 'in-process ingest, one at a time, no HTTP', value: diag.msPerEvent, unit: 'ms' },
      { bench: 'ingest', metric: 'latency p50 / p99 under full load', value: `${r.latencyP50} / ${r.latencyP99} ms` },
    ]
  } finally {
    await d.stop()
  }
}
