/**
 * Decisions per second of the default rule set, trace included, over a realistic mix of calls
 * generated up front (so the loop measures the engine, not the generator) — beside
 * json-rules-engine and @gorules/zen-engine deciding the same table (see baselines/translate.ts).
 *
 *   npx tsx bench/rules.ts [seconds=3]
 */
import { pathToFileURL } from 'node:url'
import { ZenEngine } from '@gorules/zen-engine'
import { Engine } from 'json-rules-engine'
import { compileRuleSet, FLAG_NAMES, loadDefaultRuleSet, ROUTES, type Flags, type RoutingFacts } from '../src/routing/index.js'
import { flattener, ruleOf, toJre, zenGraph, type FlatFacts } from './baselines/translate.js'
import { AGENCIES, FLAG_RATE, NATURE_BAG, pickWith, seededRandom } from './lib/mix.js'

export interface RulesResult {
  ruleSet: string
  calls: number
  routeMix: Record<string, number>
  ours: number
  jsonRulesEngine: number
  zenEngine: number
  /** Decisions (of a sample) where a baseline picked a different rule than ours: must be 0. */
  mismatches: { jsonRulesEngine: number; zenEngine: number; sample: number }
}

function generateFacts(n: number): RoutingFacts[] {
  const random = seededRandom()
  const pick = pickWith(random)
  return Array.from({ length: n }, (_, i) => {
    const flags = {} as Flags
    for (const f of FLAG_NAMES) flags[f] = random() < FLAG_RATE[f]
    const available = random() < 0.9
    return {
      eventType: random() < 0.8 ? 'call.created' : 'call.updated',
      agency: pick(AGENCIES),
      natureCode: pick(NATURE_BAG),
      priority: 1 + Math.floor(random() * 5),
      flags,
      dispatcherOverride: random() < 0.02 ? pick(ROUTES) : null,
      at: new Date(Date.UTC(2026, 0, 1) + i * 37_000).toISOString(),
      cru: available ? { available, reason: null } : { available, reason: 'outside CRU hours for example-city-pd (Mon–Fri 08:00–18:00 America/Chicago)' },
      history: {
        priorCallsForSubject30d: random() < 0.2 ? 1 + Math.floor(random() * 4) : 0,
        priorCallsAtAddress30d: random() < 0.3 ? Math.floor(random() * 6) : 0,
        caseManagerActive: random() < 0.1,
      },
    } satisfies RoutingFacts
  })
}

/** Runs `batch` until `seconds` are spent; returns calls per second. */
async function timed(seconds: number, batchSize: number, batch: () => void | Promise<void>): Promise<number> {
  let done = 0
  const start = process.hrtime.bigint()
  const budget = BigInt(Math.round(seconds * 1e9))
  while (process.hrtime.bigint() - start < budget) {
    await batch()
    done += batchSize
  }
  return done / (Number(process.hrtime.bigint() - start) / 1e9)
}

export async function runRules(opts: { seconds?: number; calls?: number; log?: (line: string) => void } = {}): Promise<RulesResult> {
  const seconds = opts.seconds ?? 3
  const calls = opts.calls ?? 100_000
  const log = opts.log ?? console.log
  const document = loadDefaultRuleSet()
  const ruleSet = compileRuleSet(document)
  const facts = generateFacts(calls)

  // Ours: synchronous closures, trace recorded.
  let sink = 0 // keeps the work observable so it cannot be optimised away
  const run = (n: number): void => {
    for (let i = 0; i < n; i++) sink += ruleSet.decide(facts[i % calls]!).trace.length
  }
  run(calls * 3) // warm-up: let the JIT settle on the hot paths
  const ours = await timed(seconds, calls, () => run(calls))

  const routeMix: Record<string, number> = {}
  for (const f of facts) {
    const d = ruleSet.decide(f)
    routeMix[d.route] = (routeMix[d.route] ?? 0) + 1
  }
  for (const r of Object.keys(routeMix)) routeMix[r] = Math.round((1000 * routeMix[r]!) / calls) / 10
  log(`  rules: ours ${Math.round(ours).toLocaleString('en-US')}/s (check ${sink % 10})`)

  // The baselines are slower by orders of magnitude: a smaller slice of the same calls, less time.
  const flatten = flattener(document)
  const flat: FlatFacts[] = facts.slice(0, 20_000).map(flatten)
  const defs = document.definitions ?? {}

  // json-rules-engine: one rule per rule, priorities in document order, stop at the first success.
  const jre = new Engine([], { allowUndefinedFacts: true })
  document.rules.forEach((r, i) => {
    jre.addRule({ name: r.id, priority: document.rules.length - i, conditions: { all: [toJre(r.when, defs)] } as never, event: { type: r.id } })
  })
  jre.on('success', () => {
    jre.stop()
  })
  const jreDecide = async (f: FlatFacts): Promise<string | undefined> => (await jre.run(f)).events[0]?.type
  let j = 0
  const jreBatch = 200
  for (let i = 0; i < 1000; i++) await jreDecide(flat[i]!)
  const jsonRulesEngine = await timed(Math.max(1, seconds / 2), jreBatch, async () => {
    for (let k = 0; k < jreBatch; k++) await jreDecide(flat[j++ % flat.length]!)
  })
  log(`  rules: json-rules-engine ${Math.round(jsonRulesEngine).toLocaleString('en-US')}/s`)

  // zen-engine: a first-hit decision table; evaluate() is async (native), so keep 64 in flight.
  const zen = new ZenEngine()
  const decision = zen.createDecision(zenGraph(document))
  const zenDecide = async (f: FlatFacts): Promise<string | undefined> => ((await decision.evaluate(f)).result as { ruleId?: string }).ruleId
  const zenBatch = 64
  let z = 0
  for (let i = 0; i < 1000; i += zenBatch) await Promise.all(flat.slice(i, i + zenBatch).map(zenDecide))
  const zenEngine = await timed(Math.max(1, seconds / 2), zenBatch, async () => {
    const slice = Array.from({ length: zenBatch }, () => flat[z++ % flat.length]!)
    await Promise.all(slice.map(zenDecide))
  })
  log(`  rules: zen-engine ${Math.round(zenEngine).toLocaleString('en-US')}/s`)

  // The three must decide the same table, or the comparison means nothing.
  const sample = 2000
  let jreWrong = 0
  let zenWrong = 0
  for (let i = 0; i < sample; i++) {
    const expected = ruleOf(ruleSet.decide(facts[i]!))
    if ((await jreDecide(flat[i]!)) !== expected) jreWrong++
    if ((await zenDecide(flat[i]!)) !== expected) zenWrong++
  }
  zen.dispose?.()

  return {
    ruleSet: `${ruleSet.name} v${ruleSet.version}`,
    calls,
    routeMix,
    ours,
    jsonRulesEngine,
    zenEngine,
    mismatches: { jsonRulesEngine: jreWrong, zenEngine: zenWrong, sample },
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await runRules({ seconds: Number(process.argv[2] ?? 3) })
  console.log(JSON.stringify(r, null, 2))
}
