/**
 * Scale-out: the same closed-loop ingest load against one API + one relay+worker process, then
 * against two of each (the clients split between the two APIs), one Postgres and one Redis.
 * Reports the ingest throughput ratio, and counts deliveries: every assignment is offered exactly
 * once (an `offered` transition per assignment; more than one is a duplicate delivery).
 */
import { hammer, type ThroughputResult } from './lib/load.js'
import type { Row } from './lib/report.js'
import { deploy } from './lib/service.js'
import { drain } from './latency.js'

export interface ScaleOutOptions {
  seconds: number
  connections: number
  log: (line: string) => void
}

/** A delivery: the worker's queued → offered (a role change writes offered → offered, not a delivery). */
const DELIVERY = "from_status = 'queued' and to_status = 'offered'"

interface Round {
  perSecond: number
  errors: number
  assignments: number
  offered: number
  duplicates: number
  stillQueued: number
}

async function round(n: number, opts: ScaleOutOptions): Promise<Round> {
  // Pools sized so two of each stay well inside Postgres's max_connections (shared with others).
  const d = await deploy(`scale${n}`, { apis: n, workers: n, env: { DATABASE_POOL_SIZE: String(Math.ceil(opts.connections / n) + 4) } })
  try {
    const per = Math.max(1, Math.floor(opts.connections / n))
    opts.log(`  scale-out: ${n} API + ${n} worker process(es), ${opts.seconds} s, ${per * n} clients`)
    const results: ThroughputResult[] = await Promise.all(d.apis.map((a, i) => hammer(a.url!, d.adminKey, { connections: per, seconds: opts.seconds, seed: 40 + i })))
    const stillQueued = await drain(d.pool, 30_000)
    const { rows } = await d.pool.query<{ assignments: string; offered: string; duplicates: string }>(
      `select (select count(*) from assignments) as assignments,
              (select count(distinct assignment_id) from assignment_transitions where ${DELIVERY}) as offered,
              (select coalesce(sum(n - 1), 0) from (select count(*) as n from assignment_transitions where ${DELIVERY} group by assignment_id) x) as duplicates`,
    )
    const r = rows[0]!
    const out: Round = {
      perSecond: results.reduce((a, x) => a + x.perSecond, 0),
      errors: results.reduce((a, x) => a + x.non2xx + x.errors + x.timeouts, 0),
      assignments: Number(r.assignments),
      offered: Number(r.offered),
      duplicates: Number(r.duplicates),
      stillQueued,
    }
    opts.log(`  scale-out: ${Math.round(out.perSecond)}/s, ${out.errors} errors, ${out.offered}/${out.assignments} offered, ${out.duplicates} duplicates, ${stillQueued} still queued`)
    return out
  } finally {
    await d.stop()
  }
}

export async function runScaleOut(opts: ScaleOutOptions): Promise<Row[]> {
  const one = await round(1, opts)
  const two = await round(2, opts)
  const ratio = two.perSecond / one.perSecond
  const dup = one.duplicates + two.duplicates
  return [
    { bench: 'scale-out', metric: 'ingest, 2 API + 2 workers vs 1 + 1', value: two.perSecond, unit: 'ev/s', baseline: one.perSecond, ratio, target: 'report (2 cores: ~1×)' },
    { bench: 'scale-out', metric: 'errors (both rounds)', value: one.errors + two.errors, target: '0', pass: one.errors + two.errors === 0 },
    { bench: 'scale-out', metric: 'duplicate deliveries (both rounds)', value: dup, target: '0', pass: dup === 0 },
    { bench: 'scale-out', metric: 'assignments not delivered after the drain', value: one.stillQueued + two.stillQueued, target: '0', pass: one.stillQueued + two.stillQueued === 0 },
  ]
}
