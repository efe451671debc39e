/**
 * Explanations and traces: every decision says which rules were tried, which condition stopped
 * each one, which fired, and why — in words a dispatcher can read.
 */
import t from 'tap'
import { compileRuleSet, parseRuleSet } from '../../src/routing/index.js'
import { defaultDocument, facts, ruleSet } from './fixtures/helpers.js'

const ruleIds = ruleSet.document.rules.map((r) => r.id)

t.test('the trace lists the rules tried, in order, up to the one that fired', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'EDP' }))
  t.same(
    d.trace.map((r) => r.ruleId),
    ruleIds.slice(0, ruleIds.indexOf('mental-health-cru') + 1),
  )
  t.ok(d.trace.slice(0, -1).every((r) => !r.matched), 'the earlier rules did not match')
  t.same(d.trace.at(-1), {
    ruleId: 'mental-health-cru',
    matched: true,
    conditions: [
      { condition: 'fact mentalHealthIndicator', value: true, result: true },
      { condition: 'mentalHealthCall', value: true, result: true },
    ],
  })
  t.same(d.trace[0], { ruleId: 'safety-medical-mental-health', matched: false, conditions: [{ condition: 'safety', value: false, result: false }] })
})

t.test('a rule stops at its first failing condition, and the trace shows where', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'ASSAULT', flags: { injury: false } }))
  t.equal(d.ruleId, 'safety-police')
  t.same(d.trace[0]?.conditions, [
    { condition: 'safety', value: true, result: true },
    { condition: 'medical', value: false, result: false },
  ])
  t.same(d.trace[2]?.conditions, [
    { condition: 'safety', value: true, result: true },
    { condition: 'fact mentalHealthIndicator', value: false, result: false },
  ])
})

t.test('the default rule fires with no conditions; every rule is in the trace', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'NOISE' }))
  t.same(d.trace.map((r) => r.ruleId), ruleIds)
  t.same(d.trace.at(-1), { ruleId: 'default-police', matched: true, conditions: [] })
  t.equal(d.explanation, 'Principle 9 (everything else goes to police): No safety, medical, mental-health or co-response facts: police respond, as CAD does today.')
})

t.test('conditions are rendered readably, with the value the rule saw', async (t) => {
  const doc = defaultDocument()
  const custom = compileRuleSet(
    parseRuleSet({
      ...doc,
      rules: [
        {
          id: 'urgent-crisis-in-hastings',
          principle: 3,
          description: 'An urgent crisis call in Hastings: CRU leads',
          when: {
            all: [
              { natureCode: ['EDP', 'SUICTHRT'] },
              { agency: ['hastings-pd'] },
              { eventType: ['call.created'] },
              { fact: 'priority', lte: 2 },
              { fact: 'priorCallsAtAddress30d', gte: 1, lte: 5 },
              { not: { flag: 'weapons' } },
              { any: [{ flag: 'mentalHealth' }, { fact: 'mentalHealthIndicator' }] },
              { fact: 'cruAvailable' },
            ],
          },
          action: { route: 'cru' },
        },
        ...doc.rules.slice(-1),
      ],
    }),
  )
  const f = facts({ natureCode: '10-56', priority: 1 })
  f.history.priorCallsAtAddress30d = 2
  const d = custom.decide(f)
  t.equal(d.ruleId, 'urgent-crisis-in-hastings')
  t.same(d.trace[0]?.conditions, [
    { condition: 'natureCode in [EDP, SUICTHRT]', value: 'SUICTHRT', result: true },
    { condition: 'agency in [hastings-pd]', value: 'hastings-pd', result: true },
    { condition: 'eventType in [call.created]', value: 'call.created', result: true },
    { condition: 'fact priority <= 2', value: 1, result: true },
    { condition: 'fact priorCallsAtAddress30d >= 1 and <= 5', value: 2, result: true },
    { condition: 'not flag weapons', value: true, result: true },
    { condition: 'any of (flag mentalHealth, fact mentalHealthIndicator)', value: true, result: true },
    { condition: 'fact cruAvailable', value: true, result: true },
  ])
  t.equal(d.explanation, 'Principle 3 (mental-health calls go to CRU): An urgent crisis call in Hastings: CRU leads.')

  const other = custom.decide(facts({ natureCode: 'NOISE', agency: 'rosemount-pd' }))
  t.same(other.trace[0]?.conditions, [{ condition: 'natureCode in [EDP, SUICTHRT]', value: 'NOISE', result: false }])
  const late = custom.decide({ ...facts({ natureCode: 'EDP', priority: 4 }) })
  t.same(late.trace[0]?.conditions.at(-1), { condition: 'fact priority <= 2', value: 4, result: false })
})

t.test('explanations name the principle, the fallback and the override', async (t) => {
  t.match(ruleSet.decide(facts({ natureCode: 'EDP', flags: { weapons: true } })).explanation, /^Principle 1 \(safety first\): /)
  t.match(ruleSet.decide(facts({ natureCode: 'OD' })).explanation, /^Principle 2 \(medical emergencies get EMS\): /)
  t.match(ruleSet.decide(facts({ natureCode: 'SUICTHRT', flags: { meansAtHand: true } })).explanation, /^Principle 4 /)
  t.match(ruleSet.decide(facts({ natureCode: 'NOISE', flags: { coResponseRequested: true } })).explanation, /^Principle 5 /)
  t.match(ruleSet.decide(facts({ natureCode: 'EDP', priorCalls: 1, caseManager: true })).explanation, /^Principle 6 /)

  const fallback = ruleSet.decide(facts({ natureCode: 'EDP', cru: 'CRU over capacity' }))
  t.equal(
    fallback.explanation,
    'Principle 3 (mental-health calls go to CRU): A non-criminal, non-violent mental-health call: CRU leads (phone triage first; CRU decides on a mobile response). ' +
      'Principle 7 (CRU fallback): CRU is not available (CRU over capacity), so the call goes to police.',
  )

  const override = ruleSet.decide(facts({ natureCode: 'EDP', override: 'police' }))
  t.equal(
    override.explanation,
    'A dispatcher routed this call to police — a human decision, which wins over every rule (principle 10: dispatcher override). ' +
      'The rules would have sent it to the Crisis Response Unit (CRU) (rule mental-health-cru).',
  )
})

t.test('derived facts are reported', async (t) => {
  t.same(ruleSet.decide(facts({ natureCode: '10-56' })).derived, { natureCode: 'SUICTHRT', unknownNatureCode: false, mentalHealthIndicator: true, frequentCaller: false })
  t.same(ruleSet.decide(facts({ natureCode: 'X1' })).derived, { natureCode: 'X1', unknownNatureCode: true, mentalHealthIndicator: false, frequentCaller: false })
  t.same(ruleSet.decide(facts({ natureCode: 'NOISE', flags: { suicidalIdeation: true } })).derived.mentalHealthIndicator, true)
})

t.test('a decision survives JSON (it is stored and replayed)', async (t) => {
  for (const f of [facts({ natureCode: 'EDP', cru: false }), facts({ natureCode: 'ZZ', override: 'ems' }), facts({ natureCode: 'SHOOT', flags: { injury: true } })]) {
    const d = ruleSet.decide(f)
    t.same(JSON.parse(JSON.stringify(d)), d)
    t.same(ruleSet.decide(JSON.parse(JSON.stringify(f))), d, 'replayed from stored facts')
  }
})

t.test('shared parts of a decision are frozen, so one decision cannot change another', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'EDP' }))
  t.throws(() => (d.assignments as { queue: string }[]).push({ queue: 'police' }))
  t.throws(() => ((d.trace[0]!.conditions[0] as { result: boolean }).result = true))
  t.same(ruleSet.decide(facts({ natureCode: 'EDP' })), d)
})
