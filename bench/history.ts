/**
 * History: what the reads that run on a timer cost once the database holds a year of calls. The
 * metrics scrape (every 15 s, per API process), the lifecycle sweep (every 15 s), the dashboard's
 * summary of the last 30 days (every 15 s while a supervisor has it open) and a console's listing
 * of its open work (at every start and every long-poll wake-up) should cost what the last 30 days
 * hold, not what the years before them hold.
 *
 * One database, measured twice in the same run: holding only the last 30 days of a year of
 * BENCH_HISTORY_CALLS calls (the baseline), then the whole year. Written straight in SQL: closed
 * calls, a third of them mental-health calls, routed in a fixed mix, one in sixty a police
 * fallback; each with one assignment through queued → offered → acknowledged → accepted →
 * completed (one police assignment in ten cancelled instead), one in twenty escalated, declined or
 * expired besides (250,000 calls: 1,262,500 transitions). Also printed, for reference: the
 * escalation count as the scrape made it before 98f9863 (every record, joined to its assignment).
 */
import { comparePositions, feedHorizon, readFeed, type FeedPosition } from '../src/assignments/feed.js'
import { listAssignments } from '../src/assignments/repository.js'
import { OPEN_STATUSES } from '../src/assignments/state-machine.js'
import { createDb, createPool } from '../src/db/connect.js'
import { createMigrationDb, migrateToLatest } from '../src/db/migrate.js'
import { createMetrics, refreshFromDb } from '../src/metrics/metrics.js'
import { buildSummary } from '../src/reports/summary.js'
import { sweep } from '../src/workers/lifecycle-worker.js'
import type { Row } from './lib/report.js'
import { createBenchDatabase } from './lib/service.js'
import { round, summarise } from './lib/stats.js'

export interface HistoryOptions {
  calls: number
  log: (line: string) => void
}

const DAY_MS = 86_400_000

/** Median milliseconds of `runs` calls of `fn`, after three unmeasured ones. */
async function medianMs(fn: () => Promise<unknown>, runs = 101): Promise<number> {
  for (let i = 0; i < 3; i++) await fn()
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    await fn()
    times.push(performance.now() - t0)
  }
  return summarise(times).p50
}

// Calls $1..$2 of the year, call i placed i × $3 seconds ago: the reads under test look at
// statuses, queues, routes, due times and transaction ids, not at what a call says, so the rows
// carry no call data.
const ROUTES = `(array['cru', 'police', 'co_response', 'ems', 'police', 'case_manager'])[1 + i % 6]`
const FILL = [
  `insert into calls (call_id, agency, status, nature_code, priority, flags, route, mental_health, last_occurred_at, created_at, closed_at)
     select 'H' || i, (array['hastings-pd', 'burnsville-pd', 'dakota-so'])[1 + i % 3], 'closed', 'EDP', 2, '{}', ${ROUTES}, i % 3 = 0,
       now() - make_interval(secs => i * $3::float8), now() - make_interval(secs => i * $3::float8), now() - make_interval(secs => i * $3::float8 - 3600)
     from generate_series($1::int, $2::int) i`,
  `insert into call_events (event_id, call_id, type, occurred_at, body_hash, body, applied)
     select 'HE' || i, 'H' || i, 'call.created', now(), 'bench', '{}', true from generate_series($1::int, $2::int) i`,
  `insert into decisions (id, call_id, event_id, route, rule_set_version, rule_id, explanation, facts, outcome, created_at)
     select gen_random_uuid(), 'H' || i, 'HE' || i, ${ROUTES}, 1, 'bench', 'bench', '{}',
       case when i % 20 = 1 then '{"fallback": {"from": "cru"}}' else '{}' end::jsonb, now() - make_interval(secs => i * $3::float8)
     from generate_series($1::int, $2::int) i`,
  // Each call names its decision, as ingest leaves it: the report reads DESIGN rule 1 from it.
  `update calls c set decision_id = d.id from generate_series($1::int, $2::int) i join decisions d on d.call_id = 'H' || i where c.call_id = d.call_id`,
  // The newest 60 are still open (accepted); one police assignment in ten ends cancelled after it
  // was accepted: the report finds its field response in the transitions, not in the status.
  `insert into assignments (id, call_id, decision_id, agency, queue, role, status, created_at, due_at)
     select gen_random_uuid(), d.call_id, d.id, c.agency, q.queue, 'primary',
       case when i <= 60 then 'accepted' when q.queue = 'police' and hashtext(d.call_id) % 10 = 0 then 'cancelled' else 'completed' end, c.created_at,
       case when q.queue = 'follow_up' then c.created_at + interval '72 hours' end
     from generate_series($1::int, $2::int) i join decisions d on d.call_id = 'H' || i join calls c on c.call_id = d.call_id
     cross join lateral (select (array['police', 'cru', 'ems', 'police', 'case_management', 'follow_up'])[1 + (hashtext(d.call_id) & 255) % 6] as queue) q`,
  `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, feed_agency, feed_queue, at)
     select a.id, s.f, coalesce(nullif(s.t, 'completed'), a.status), 'primary', 'bench', 'bench', a.agency, a.queue, a.created_at + s.after
     from generate_series($1::int, $2::int) i join assignments a on a.call_id = 'H' || i
     cross join (values (null, 'queued', interval '0'), ('queued', 'offered', interval '1 second'), ('offered', 'acknowledged', interval '1 minute'),
       ('acknowledged', 'accepted', interval '2 minutes'), ('accepted', 'completed', interval '1 hour')) s(f, t, after)`,
  `insert into assignment_transitions (assignment_id, from_status, to_status, role, actor, reason, feed_agency, feed_queue, at)
     select a.id, 'offered', (array['escalated', 'expired', 'declined'])[1 + a.seq % 3], 'primary', 'bench', 'bench', a.agency, a.queue, a.created_at
     from generate_series($1::int, $2::int) i join assignments a on a.call_id = 'H' || i where a.seq % 20 = 0`,
]

// The escalation count of the scrape before 98f9863.
const FULL_ESCALATION_COUNT = `select a.queue, t.to_status, count(*) from assignment_transitions t join assignments a on a.id = t.assignment_id
  where t.to_status in ('escalated', 'expired', 'declined') group by 1, 2`

export async function runHistory(opts: HistoryOptions): Promise<Row[]> {
  const database = await createBenchDatabase(`history_${process.pid}`)
  const { databaseUrl } = database
  const pool = createPool({ connectionString: databaseUrl, max: 4, statementTimeoutMs: 600_000 })
  const db = createDb(pool)
  try {
    const migrationDb = createMigrationDb(databaseUrl)
    await migrateToLatest(migrationDb)
    await migrationDb.destroy()

    await pool.query(`insert into rule_sets (version, name, document, status) values (1, 'bench-history', '{}', 'active')`)
    const spacingS = (365 * DAY_MS) / 1000 / opts.calls
    const recent = Math.ceil((opts.calls * 30) / 365)
    const fill = async (from: number, to: number) => {
      for (const statement of FILL) await pool.query(statement, statement.includes('$3') ? [from, to, spacingS] : [from, to])
      // As autovacuum would soon after (it is off on these machines), and the fill's dirty pages
      // written now rather than by a checkpoint during the measurements.
      await pool.query('vacuum analyze')
      await pool.query('checkpoint')
    }

    const metrics = createMetrics()
    const reads = {
      scrape: () => refreshFromDb(db, metrics, new Date()),
      sweep: () => sweep(db, undefined, {}),
      summary: () => {
        const to = new Date()
        return buildSummary(db, { from: new Date(to.getTime() - 30 * DAY_MS), to, bucket: 'day' }, { asOf: to, repeatThreshold: 3 })
      },
      // A console's open work, as it loads it: one agency, the open statuses, a page of 50.
      listing: () => listAssignments(db, { agencies: ['hastings-pd'], status: [...OPEN_STATUSES], limit: 50 }),
      fullCount: () => pool.query(FULL_ESCALATION_COUNT),
    }
    // A console whose scope nothing in the history matches (a newly added agency) resuming from
    // the feed's start, a page of 500 at a time as subscribeFeed reads: its longest statement, and
    // the whole catch-up.
    const resume = async () => {
      const upTo = { xid: await feedHorizon(db), id: 0 }
      let at: FeedPosition = { xid: 0n, id: 0 }
      let longest = 0
      const t0 = performance.now()
      while (comparePositions(at, upTo) < 0) {
        const t1 = performance.now()
        at = (await readFeed(db, { after: at, upTo, scope: { agencies: ['lakeville-pd'], queues: null }, limit: 500 })).next
        longest = Math.max(longest, performance.now() - t1)
      }
      return { longest, total: performance.now() - t0 }
    }
    const resumes = async () => {
      const runs = []
      for (let i = 0; i < 6; i++) runs.push(await resume())
      const kept = runs.slice(1)
      return { longest: summarise(kept.map((r) => r.longest)).p50, total: summarise(kept.map((r) => r.total)).p50 }
    }
    const measure = async () => ({
      scrape: await medianMs(reads.scrape),
      sweep: await medianMs(reads.sweep),
      summary: await medianMs(reads.summary, 11),
      listing: await medianMs(reads.listing),
      fullCount: await medianMs(reads.fullCount, 11),
      resume: await resumes(),
    })

    let t0 = performance.now()
    await fill(1, recent)
    opts.log(`  the last 30 days: ${recent.toLocaleString('en-US')} calls, written in ${round((performance.now() - t0) / 1000)} s`)
    // Twice, the first unreported: the process warms up on it (its JIT, the pool's connections and
    // prepared statements), which would otherwise flatter the year's ratio.
    await measure()
    const month = await measure()
    opts.log(
      `  30 days: scrape ${round(month.scrape, 2)} ms, sweep ${round(month.sweep, 2)} ms, 30-day summary ${round(month.summary)} ms, open-work listing ${round(month.listing, 2)} ms, quiet-scope resume ${round(month.resume.total)} ms (longest statement ${round(month.resume.longest, 2)} ms)`,
    )

    t0 = performance.now()
    await fill(recent + 1, opts.calls)
    const { rows } = await pool.query<{ n: string }>('select count(*) as n from assignment_transitions')
    const transitions = Number(rows[0]!.n)
    opts.log(`  the rest of the year: ${opts.calls.toLocaleString('en-US')} calls and ${transitions.toLocaleString('en-US')} transitions in all, written in ${round((performance.now() - t0) / 1000)} s`)

    // A process started now: its first scrape counts every escalation record once.
    const t1 = performance.now()
    await refreshFromDb(db, createMetrics(), new Date())
    const firstScrape = performance.now() - t1
    const year = await measure()
    opts.log(
      `  a year: scrape ${round(year.scrape, 2)} ms (a new process's first: ${round(firstScrape)} ms), sweep ${round(year.sweep, 2)} ms, 30-day summary ${round(year.summary)} ms, open-work listing ${round(year.listing, 2)} ms, quiet-scope resume ${round(year.resume.total)} ms (longest statement ${round(year.resume.longest, 2)} ms); the old escalation count ${round(year.fullCount)} ms`,
    )

    const size = `${opts.calls.toLocaleString('en-US')} calls, ${transitions.toLocaleString('en-US')} transitions`
    const row = (metric: string, k: 'scrape' | 'sweep' | 'summary' | 'listing'): Row => {
      const ratio = year[k] / month[k]
      return { bench: 'history', metric: `${metric}, a year (${size}); baseline: its last 30 days`, value: round(year[k], 2), unit: 'ms', baseline: round(month[k], 2), ratio, target: '≤ 2×', pass: ratio <= 2 }
    }
    return [
      row('metrics scrape', 'scrape'),
      row('lifecycle sweep', 'sweep'),
      row("dashboard's 30-day summary", 'summary'),
      row("a console's open work (GET /v1/assignments, open statuses, one agency)", 'listing'),
      {
        bench: 'history',
        metric: `a console of a scope nothing matches, resuming from the feed's start: its longest statement, a year (${size}); baseline: its last 30 days`,
        value: round(year.resume.longest, 2),
        unit: 'ms',
        baseline: round(month.resume.longest, 2),
        ratio: year.resume.longest / month.resume.longest,
        target: '≤ 2×',
        pass: year.resume.longest / month.resume.longest <= 2,
      },
      { bench: 'history', metric: 'the same resume, the whole catch-up: a year, against its last 30 days', value: round(year.resume.total), unit: 'ms', baseline: round(month.resume.total), ratio: year.resume.total / month.resume.total },
      { bench: 'history', metric: "a new process's first scrape (counts every escalation once)", value: round(firstScrape), unit: 'ms' },
      { bench: 'history', metric: 'the escalation count before 98f9863, every scrape', value: round(year.fullCount), unit: 'ms', baseline: round(month.fullCount, 2), ratio: year.fullCount / month.fullCount },
    ]
  } finally {
    await db.destroy()
    await database.drop()
  }
}
