/**
 * npm run bench [-- rules ingest latency soak scaleout history]   (all when none is named)
 *
 * Each benchmark measures its baseline in the same run and prints the ratio. Durations come from
 * the environment (see bench/README.md): BENCH_SECONDS, BENCH_SOAK_SECONDS, BENCH_RATE,
 * BENCH_CONNECTIONS, BENCH_RULES_SECONDS, BENCH_HISTORY_CALLS; BENCH_QUICK=1 shortens everything to a < 1 min run.
 * Prints a table and writes bench/results.json.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runHistory } from './history.js'
import { runIngest } from './ingest.js'
import { runLatency } from './latency.js'
import { table, type Row } from './lib/report.js'
import { runRules } from './rules.js'
import { runScaleOut } from './scaleout.js'
import { runSoak } from './soak.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const BENCHES = ['rules', 'ingest', 'latency', 'soak', 'scaleout', 'history'] as const
type Bench = (typeof BENCHES)[number]

const env = (name: string, fallback: number): number => {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, not "${v}"`)
  return n
}

const quick = process.env.BENCH_QUICK === '1'
const settings = {
  seconds: env('BENCH_SECONDS', quick ? 3 : 30),
  soakSeconds: env('BENCH_SOAK_SECONDS', quick ? 10 : 600),
  rate: env('BENCH_RATE', 200),
  connections: env('BENCH_CONNECTIONS', 16),
  rulesSeconds: env('BENCH_RULES_SECONDS', quick ? 1 : 3),
  historyCalls: env('BENCH_HISTORY_CALLS', quick ? 20_000 : 250_000),
}

const named = process.argv.slice(2).filter((a) => a !== '--')
for (const n of named) if (!(BENCHES as readonly string[]).includes(n)) throw new Error(`unknown benchmark "${n}" (expected ${BENCHES.join(', ')})`)
const selected: Bench[] = named.length ? (named as Bench[]) : [...BENCHES]

/** The service benchmarks run dist/: build it when a source file is newer. */
function buildIfStale(): void {
  const newest = (dir: string): number => {
    let t = 0
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs)
    }
    return t
  }
  let built = 0
  try {
    built = statSync(join(ROOT, 'dist/src/main.js')).mtimeMs
  } catch {
    // never built
  }
  const sources = Math.max(...['src', 'migrations', 'rules'].map((d) => newest(join(ROOT, d))))
  if (built < sources) {
    console.log('building dist/ (sources changed)…')
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
  }
}

const log = (line: string): void => console.log(line)
const rows: Row[] = []
const raw: Record<string, unknown> = {}
const started = new Date()

if (selected.some((b) => b !== 'rules' && b !== 'history') && !process.env.BENCH_SERVICE_DIR) buildIfStale()
console.log(`cad-router benchmarks: ${selected.join(', ')} (${JSON.stringify(settings)}); ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)

for (const b of selected) {
  const t0 = performance.now()
  console.log(`\n▶ ${b}`)
  try {
    switch (b) {
      case 'rules': {
        const r = await runRules({ seconds: settings.rulesSeconds, log })
        raw.rules = r
        const vsJre = r.ours / r.jsonRulesEngine
        const vsZen = r.ours / r.zenEngine
        rows.push(
          { bench: 'rules', metric: 'decisions/s, trace on (default rule set)', value: r.ours, unit: '/s', target: '≥ 1,000,000/s', pass: r.ours >= 1_000_000 },
          { bench: 'rules', metric: 'vs json-rules-engine', value: r.ours, unit: '/s', baseline: r.jsonRulesEngine, ratio: vsJre, target: '≥ 100×', pass: vsJre >= 100 },
          { bench: 'rules', metric: 'vs @gorules/zen-engine', value: r.ours, unit: '/s', baseline: r.zenEngine, ratio: vsZen, target: '≥ 100×', pass: vsZen >= 100 },
          {
            bench: 'rules',
            metric: `baselines disagreeing with ours (of ${r.mismatches.sample})`,
            value: r.mismatches.jsonRulesEngine + r.mismatches.zenEngine,
            target: '0',
            pass: r.mismatches.jsonRulesEngine + r.mismatches.zenEngine === 0,
          },
        )
        break
      }
      case 'ingest':
        rows.push(...(await runIngest({ seconds: settings.seconds, connections: settings.connections, log })))
        break
      case 'latency':
        rows.push(...(await runLatency({ seconds: settings.seconds, rate: settings.rate, aloneEvents: quick ? 50 : 300, log })))
        break
      case 'soak': {
        const r = await runSoak({ seconds: settings.soakSeconds, rate: settings.rate, log })
        raw.soak = { timeline: r.timeline }
        rows.push(...r.rows)
        break
      }
      case 'scaleout':
        rows.push(...(await runScaleOut({ seconds: settings.seconds, connections: settings.connections, log })))
        break
      case 'history':
        rows.push(...(await runHistory({ calls: settings.historyCalls, log })))
        break
    }
  } catch (err) {
    console.error(`  ${b} failed: ${(err as Error).stack ?? String(err)}`)
    rows.push({ bench: b, metric: 'run', value: `failed: ${(err as Error).message}`, pass: false })
  }
  console.log(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`)
}

console.log(`\n${table(rows)}`)
const results = {
  startedAt: started.toISOString(),
  finishedAt: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryGb: Math.round(os.totalmem() / 2 ** 30), loadAverage: os.loadavg(), node: process.version },
  settings,
  selected,
  rows,
  raw,
}
writeFileSync(join(ROOT, 'bench/results.json'), `${JSON.stringify(results, null, 2)}\n`)
console.log('\nwritten: bench/results.json')
// A missed target is a finding, not a failure of the run; a benchmark that could not run is.
process.exitCode = rows.some((r) => r.metric === 'run') ? 1 : 0
