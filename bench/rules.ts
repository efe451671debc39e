/**
 * Decisions per second of the default rule set, trace included, over a realistic mix of calls
 * generated up front (so the loop measures the engine, not the generator).
 *
 *   npx tsx bench/rules.ts [calls=100000] [seconds=3]
 */
import { compileRuleSet, FLAG_NAMES, loadDefaultRuleSet, ROUTES, type FlagName, type Flags, type RoutingFacts } from '../src/routing/index.js'

const CALLS = Number(process.argv[2] ?? 100_000)
const SECONDS = Number(process.argv[3] ?? 3)

// A seeded generator so every run measures the same mix.
let seed = 0x2545f491
const random = (): number => {
  seed ^= seed << 13
  seed ^= seed >>> 17
  seed ^= seed << 5
  return (seed >>> 0) / 0x1_0000_0000
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!

// Weighted roughly like a county 911 day: mostly police business, a steady share of medical and
// mental-health calls, a few agency-local and unknown codes.
const MIX: readonly [string, number][] = [
  ['NOISE', 8], ['SUSP', 8], ['PARKING', 5], ['MVA', 6], ['TSTOP', 6], ['LARCENY', 5], ['BURGLARY', 3],
  ['DISORD', 4], ['TRESPASS', 3], ['ASSAULT', 3], ['DVA', 2], ['DVNA', 3], ['FIGHT', 2], ['THREATS', 2],
  ['WEAPON', 1], ['ROBBERY', 1], ['SICK', 6], ['FALL', 4], ['CARDIAC', 2], ['OD', 2], ['PERUNCON', 2],
  ['MVAINJY', 2], ['EDP', 5], ['SUICTHRT', 3], ['SUICIDE', 1], ['WELFARE', 6], ['CITASST', 3], ['INTOX', 3],
  ['10-56', 1], ['ZZ-LOCAL', 1],
]
const BAG = MIX.flatMap(([code, weight]) => Array<string>(weight).fill(code))
const AGENCIES = ['hastings-pd', 'rosemount-pd', 'apple-valley-pd', 'west-st-paul-pd', 'south-st-paul-pd', 'dakota-so', 'example-city-pd']
const FLAG_RATE: Record<FlagName, number> = {
  weapons: 0.04, violence: 0.06, threatToOthers: 0.04, crimeInProgress: 0.05, medicalEmergency: 0.1, injury: 0.08,
  mentalHealth: 0.15, suicidalIdeation: 0.05, meansAtHand: 0.03, substanceUse: 0.08, coResponseRequested: 0.03,
}

function randomFacts(i: number): RoutingFacts {
  const flags = {} as Flags
  for (const f of FLAG_NAMES) flags[f] = random() < FLAG_RATE[f]
  const available = random() < 0.9
  return {
    eventType: random() < 0.8 ? 'call.created' : 'call.updated',
    agency: pick(AGENCIES),
    natureCode: pick(BAG),
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
  }
}

const ruleSet = compileRuleSet(loadDefaultRuleSet())
const facts = Array.from({ length: CALLS }, (_, i) => randomFacts(i))

let sink = 0 // keeps the work observable so it cannot be optimised away
const run = (n: number): void => {
  for (let i = 0; i < n; i++) sink += ruleSet.decide(facts[i % CALLS]!).trace.length
}

run(CALLS * 3) // warm-up: let the JIT settle on the hot paths
let decisions = 0
const start = process.hrtime.bigint()
const budget = BigInt(Math.round(SECONDS * 1e9))
while (process.hrtime.bigint() - start < budget) {
  run(CALLS)
  decisions += CALLS
}
const elapsed = Number(process.hrtime.bigint() - start) / 1e9
const perSecond = decisions / elapsed

const routes = new Map<string, number>()
for (const f of facts) {
  const d = ruleSet.decide(f)
  routes.set(d.route, (routes.get(d.route) ?? 0) + 1)
}
console.log(`rule set ${ruleSet.name} v${ruleSet.version}, ${CALLS} distinct calls, trace on`)
console.log(`route mix: ${[...routes].map(([r, n]) => `${r} ${((100 * n) / CALLS).toFixed(1)}%`).join(', ')}`)
console.log(`${Math.round(perSecond).toLocaleString('en-US')} decisions/s (${((elapsed * 1e9) / decisions).toFixed(0)} ns each; ${decisions} in ${elapsed.toFixed(2)} s; check ${sink % 10})`)
