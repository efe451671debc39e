/**
 * Safety invariants of the default rule set over many random calls (fast-check): random nature
 * codes (APCO, agency-local and unknown), flags, agencies, CRU availability and history. Overrides
 * are human decisions and are checked on their own, outside the safety invariants.
 */
import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import t from 'tap'
import { FLAG_NAMES, ROUTES, type Flags, type FlagName, type RoutingDecision, type RoutingFacts } from '../../src/routing/index.js'
import { ruleSet } from './fixtures/helpers.js'

const RUNS = 20_000
const doc = ruleSet.document
const SAFETY_FLAGS: FlagName[] = ['weapons', 'violence', 'threatToOthers', 'crimeInProgress']
// From DESIGN.md and the APCO list: violent codes must bring police whatever the flags say.
const VIOLENT_CODES = new Set(['WEAPON', 'SHOOT', 'STABBING', 'ASSAULT', 'FIGHT', 'DVA', 'ROBBERY', 'THREATS', 'HOMICIDE', 'HOSTAGE', 'CARJACK', 'ABDUCTF', 'ABDUCTNF'])
const MEDICAL_CODES = new Set(['OD', 'CARDIAC', 'PERUNCON', 'SICK', 'MVAINJY', 'STROKE', 'SEIZURE', 'RESPARR', 'CHOKE', 'BLEEDING'])
const MH_CODES = new Set(['EDP', 'SUICTHRT', 'SUICIDE'])

const natureCode = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...doc.natureCodes) },
  { weight: 3, arbitrary: fc.constantFrom('EDP', 'SUICTHRT', 'SUICIDE', 'WELFARE', 'CITASST', 'INTOX', 'OD', 'ASSAULT', 'NOISE', 'TRESPASS') },
  { weight: 1, arbitrary: fc.constantFrom('10-56', 'edp', 'ZZ-WHAT', '') },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
)
const agency = fc.oneof(fc.constantFrom('hastings-pd', 'rosemount-pd', 'apple-valley-pd', 'dakota-so', 'example-city-pd', '*'), fc.string({ maxLength: 12 }))
const flags = fc.record(Object.fromEntries(FLAG_NAMES.map((f) => [f, fc.boolean()])) as Record<FlagName, fc.Arbitrary<boolean>>) as fc.Arbitrary<Flags>
const cru = fc.oneof(
  fc.constant({ available: true, reason: null }),
  fc.record({ available: fc.constant(false), reason: fc.option(fc.constantFrom('outside CRU hours for example-city-pd (Mon–Fri 08:00–18:00 America/Chicago)', 'CRU over capacity'), { nil: null }) }),
)

const callFacts: fc.Arbitrary<RoutingFacts> = fc.record({
  eventType: fc.constantFrom('call.created', 'call.updated', 'call.closed'),
  agency,
  natureCode,
  priority: fc.integer({ min: 1, max: 5 }),
  flags,
  dispatcherOverride: fc.constant(null),
  at: fc.integer({ min: Date.UTC(2025, 0, 1), max: Date.UTC(2028, 0, 1) }).map((ms) => new Date(ms).toISOString()),
  cru,
  history: fc.record({
    priorCallsForSubject30d: fc.nat({ max: 12 }),
    priorCallsAtAddress30d: fc.nat({ max: 40 }),
    caseManagerActive: fc.boolean(),
  }),
})

// Own properties only: a nature code such as "toString" must not find Object.prototype.
const own = <T,>(o: Record<string, T> | undefined, k: string): T | undefined => (o && Object.hasOwn(o, k) ? o[k] : undefined)
const mapped = (f: RoutingFacts): string => own(own(doc.natureCodeMaps, f.agency), f.natureCode) ?? f.natureCode
const has = (d: RoutingDecision, queue: string) => d.assignments.some((a) => a.queue === queue)
const safetyFact = (f: RoutingFacts) => SAFETY_FLAGS.some((k) => f.flags[k]) || VIOLENT_CODES.has(mapped(f))
const medicalFact = (f: RoutingFacts) => f.flags.medicalEmergency || f.flags.injury || MEDICAL_CODES.has(mapped(f))
const mentalHealth = (f: RoutingFacts) => f.flags.mentalHealth || f.flags.suicidalIdeation || MH_CODES.has(mapped(f))

const check = (name: string, predicate: (f: RoutingFacts, d: RoutingDecision) => boolean) =>
  t.test(name, async (t) => {
    fc.assert(
      fc.property(callFacts, (f) => predicate(f, ruleSet.decide(f))),
      { numRuns: RUNS },
    )
    t.pass(`${RUNS} random calls`)
  })

check('weapons, violence, threat to others, crime in progress or a violent code ⇒ a police assignment', (f, d) => !safetyFact(f) || has(d, 'police'))

check('a safety fact never goes to CRU or a case manager alone: police are primary', (f, d) => {
  if (!safetyFact(f)) return true
  const primary = d.assignments.find((a) => a.role === 'primary')
  return primary?.queue === 'police' && d.route !== 'cru' && d.route !== 'case_manager'
})

check('a medical emergency, injury or medical code ⇒ an EMS assignment', (f, d) => !medicalFact(f) || has(d, 'ems'))

check('exactly one primary, no queue twice, never follow_up among the assignments', (_f, d) => {
  const queues = d.assignments.map((a) => a.queue)
  return d.assignments.filter((a) => a.role === 'primary').length === 1 && new Set(queues).size === queues.length && !queues.includes('follow_up')
})

check('a mental-health indicator ⇒ a 72-hour follow-up', (f, d) => !mentalHealth(f) || (d.followUp?.queue === 'follow_up' && d.followUp.dueWithinHours === 72))

check('derived facts agree with DESIGN.md', (f, d) => d.derived.mentalHealthIndicator === mentalHealth(f) && d.derived.natureCode === mapped(f))

check('no fallback while CRU is available; CRU unavailable ⇒ no CRU assignment, and a fallback, with the reason, exactly where CRU would have been assigned', (f, d) => {
  if (f.cru.available) return d.fallback === null
  if (has(d, 'cru')) return false
  const wouldHave = has(ruleSet.decide({ ...f, cru: { available: true, reason: null } }), 'cru')
  return wouldHave ? d.fallback !== null && d.fallback.reason.includes(f.cru.reason ?? 'CRU reported unavailable') : d.fallback === null
})

check('an unknown nature code ⇒ marked for review', (f, d) => d.derived.unknownNatureCode === !doc.natureCodes.includes(mapped(f)) && (!d.derived.unknownNatureCode || d.review.includes('unknown-nature-code')))

check('the trace ends at the rule that fired, after rules that did not match', (_f, d) => {
  const last = d.trace.at(-1)
  return last !== undefined && last.matched && last.ruleId === d.ruleId && d.trace.slice(0, -1).every((r) => !r.matched) && d.override === null
})

check('decisions are reproducible: the same facts give deep-equal decisions', (f) => {
  const a = ruleSet.decide(f)
  const b = ruleSet.decide(structuredClone(f))
  return isDeepStrictEqual(a, b) && isDeepStrictEqual(JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b)))
})

t.test('a dispatcher override wins over every rule and keeps the rules’ follow-up', async (t) => {
  fc.assert(
    fc.property(callFacts, fc.constantFrom(...ROUTES), (f, route) => {
      const auto = ruleSet.decide(f)
      const d = ruleSet.decide({ ...f, dispatcherOverride: route })
      const expected = doc.routes[route].map((a) => `${a.queue}:${a.role}`)
      return (
        d.route === route &&
        d.ruleId === 'dispatcher-override' &&
        JSON.stringify(d.assignments.map((a) => `${a.queue}:${a.role}`)) === JSON.stringify(expected) &&
        d.override?.route === route &&
        d.override.overriddenRuleId === auto.ruleId &&
        JSON.stringify(d.followUp) === JSON.stringify(auto.followUp) &&
        JSON.stringify(d.trace) === JSON.stringify(auto.trace) &&
        d.fallback === null
      )
    }),
    { numRuns: RUNS / 4 },
  )
  t.pass(`${RUNS / 4} random overrides`)
})
