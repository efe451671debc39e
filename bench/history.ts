/**
 * History: what the reads that run on a timer cost once the database holds a year of calls. The
 * metrics scrape (every 15 s, per API process) and the lifecycle sweep (every 15 s) must cost the
 * same after a year as on the first day; each once read every row of its kind ever written.
 *
 * One database, measured twice in the same run: empty but for the migrations (the baseline), then
 * after a fill of BENCH_HISTORY_CALLS closed calls written straight in SQL, each with one assignment
 * through queued → offered → acknowledged → completed, one in twenty escalated, declined or expired
 * besides (250,000 calls: 1,012,500 transitions). Also printed, for reference: the escalation count
 * as the scrape made it before 98f9863 (every record, joined to its assignment).
 */
import pg from 'pg'
import { createDb, createPool } from '../src/db/connect.js'
import { createMigrationDb, migrateToLatest } from '../src/db/migrate.js'
import { createMetrics, refreshFromDb } from '../src/metrics/metrics.js'
import { sweep } from '../src/workers/lifecycle-worker.js'
import type { Row } from './lib/report.js'
import { PG_ADMIN_URL } from './lib/service.js'
import { round } from './lib/stats.js'

export interface HistoryOptions {
  calls: number
  log: (line: string) => void
}

/** Median milliseconds of `runs` calls of `fn`, after three unmeasured ones. */
async function medianMs(fn: () => Promise<unknown>, runs = 101): Promise<number> {
  for (let i = 0; i < 3; i++) await fn()
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    await fn()
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  return times[Math.floor(runs / 2)]!
}

// A year written in SQL: the reads under test look at statuses, queues, due times and transaction
// ids, not at what a call says, so the rows carry no call data.
const FILL = [
  `insert into rule_sets (version, name, document, status) values (1, 'bench-history', '{}', 'active')`,
  `insert into calls (call_id, agency, status, nature_code, priority, flags, route, last_occurred_at, created_at, closed_at)
     select 'H' || i, (array['hastings-pd', 'burnsville-pd', 'dakota-so'])[1 + i % 3], 'closed', 'EDP', 2, '{}', 'cru',
       now() - make_interval(secs => i * 120), now() - make_interval(secs => i * 120), now() - make_interval(secs => i * 120 - 3600)
     from generate_series(1, $1::int) i`,
  `insert into call_events (event_id, call_id, type, occurred_at, body_hash, body, applied)
     select 'HE' || i, 'H' || i, 'call.created', now(), 'bench', '{}', true from generate_series(1, $1::int) i`,
  `insert into decisions (id, call_id, event_id, route, rule_set_version, rule_id, explanation, facts, outcome)
     select gen_random_uuid(), 'H' || i, 'HE' || i, 'cru', 1, 'bench', 'bench', '{}', '{}' from generate_series(1, $1::int) i`,
  `insert into assignments (id, call_id, decision_id, agency, queue, role, status, created_at, due_at)
     select gen_random_uuid(), d.call_id, d.id, c.agency, q.queue, 'primary', 'completed', c.created_at,
       case when q.queue = 'follow_up' then c.created_at + interval '72 hours' end
     from decisions d join calls c using (call_id)
     cross join lateral (select (array['police', 'cru', 'ems', 'police', 'case_management', 'follow_up'])[1 + (hashtext(d.call_id) & 255) % 6] as queue) q`,
  `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, feed_agency, feed_queue, at)
     select a.id, s.f, s.t, 'primary', 'bench', 'bench', a.agency, a.queue, a.created_at
     from assignments a cross join (values (null, 'queued'), ('queued', 'offered'), ('offered', 'acknowledged'), ('acknowledged', 'completed')) s(f, t)`,
  `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, feed_agency, feed_queue, at)
     select a.id, 'offered', (array['escalated', 'expired', 'declined'])[1 + a.seq % 3], 'primary', 'bench', 'bench', a.agency, a.queue, a.created_at
     from assignments a where a.seq % 20 = 0`,
  // As autovacuum would soon after (it is off on these machines), and the fill's dirty pages written
  // now rather than by a checkpoint during the measurements.
  'vacuum analyze',
  'checkpoint',
]

// The escalation count of the scrape before 98f9863.
const FULL_ESCALATION_COUNT = `select a.queue, t.to_status, count(*) from assignment_transitions t join assignments a on a.id = t.assignment_id
  where t.to_status in ('escalated', 'expired', 'declined') group by 1, 2`

export async function runHistory(opts: HistoryOptions): Promise<Row[]> {
  const dbName = `bench_history_${process.pid}`
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  await admin.query(`create database ${dbName}`)
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${dbName}`
  const databaseUrl = url.toString()
  const pool = createPool({ connectionString: databaseUrl, max: 4, statementTimeoutMs: 600_000 })
  const db = createDb(pool)
  try {
    const migrationDb = createMigrationDb(databaseUrl)
    await migrateToLatest(migrationDb)
    await migrationDb.destroy()

    const metrics = createMetrics()
    const reads = {
      scrape: () => refreshFromDb(db, metrics, new Date()),
      sweep: () => sweep(db, undefined, {}),
      fullCount: () => pool.query(FULL_ESCALATION_COUNT),
    }
    const measure = async () => ({ scrape: await medianMs(reads.scrape), sweep: await medianMs(reads.sweep), fullCount: await medianMs(reads.fullCount, 11) })
    const empty = await measure()
    opts.log(`  empty: scrape ${round(empty.scrape, 2)} ms, sweep ${round(empty.sweep, 2)} ms`)

    const t0 = performance.now()
    for (const statement of FILL) await pool.query(statement, statement.includes('$1') ? [opts.calls] : [])
    const { rows } = await pool.query<{ n: string }>('select count(*) as n from assignment_transitions')
    const transitions = Number(rows[0]!.n)
    opts.log(`  filled ${opts.calls.toLocaleString('en-US')} calls, ${transitions.toLocaleString('en-US')} transitions in ${round((performance.now() - t0) / 1000)} s`)

    // A process started now: its first scrape counts every escalation record once.
    const t1 = performance.now()
    await refreshFromDb(db, createMetrics(), new Date())
    const firstScrape = performance.now() - t1
    const full = await measure()
    opts.log(`  filled: scrape ${round(full.scrape, 2)} ms (a new process's first: ${round(firstScrape)} ms), sweep ${round(full.sweep, 2)} ms; the old escalation count ${round(full.fullCount)} ms`)

    const size = `${opts.calls.toLocaleString('en-US')} calls, ${transitions.toLocaleString('en-US')} transitions`
    const flat = (r: number) => r <= 2
    const rScrape = full.scrape / empty.scrape
    const rSweep = full.sweep / empty.sweep
    return [
      { bench: 'history', metric: `metrics scrape, ${size} (baseline: empty)`, value: round(full.scrape, 2), unit: 'ms', baseline: round(empty.scrape, 2), ratio: rScrape, target: '≤ 2× empty', pass: flat(rScrape) },
      { bench: 'history', metric: `lifecycle sweep, ${size} (baseline: empty)`, value: round(full.sweep, 2), unit: 'ms', baseline: round(empty.sweep, 2), ratio: rSweep, target: '≤ 2× empty', pass: flat(rSweep) },
      { bench: 'history', metric: "a new process's first scrape (counts every escalation once)", value: round(firstScrape), unit: 'ms' },
      { bench: 'history', metric: 'the escalation count before 98f9863, every scrape', value: round(full.fullCount), unit: 'ms', baseline: round(empty.fullCount, 2), ratio: full.fullCount / empty.fullCount },
    ]
  } finally {
    await db.destroy()
    await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => {})
    await admin.end()
  }
}
