/** The frequentCaller history fact: derived from the stored count and the rule set's threshold. */
import t from 'tap'
import { compileRuleSet, parseRuleSet, RuleSetError } from '../../src/routing/index.js'
import { defaultDocument, facts } from '../routing/fixtures/helpers.js'
import { candidateV2 } from './fixtures/store.js'

const v2 = compileRuleSet(candidateV2())

t.test('frequentCaller counts this call: N or more calls in 30 days, threshold from the rule set', async (t) => {
  t.equal(v2.decide(facts({ priorCalls: 1 })).derived.frequentCaller, false, '2 calls < 3')
  t.equal(v2.decide(facts({ priorCalls: 2 })).derived.frequentCaller, true, '3 calls >= 3')
  const doc = defaultDocument() as Record<string, unknown>
  doc.frequentCaller = { minCalls: 5 }
  const five = compileRuleSet(parseRuleSet(doc))
  t.equal(five.decide(facts({ priorCalls: 3 })).derived.frequentCaller, false)
  t.equal(five.decide(facts({ priorCalls: 4 })).derived.frequentCaller, true)
  const dflt = compileRuleSet(parseRuleSet(defaultDocument()))
  t.equal(dflt.decide(facts({ priorCalls: 2 })).derived.frequentCaller, true, 'default threshold is 3')
  t.equal(dflt.decide(facts({ priorCalls: 1 })).derived.frequentCaller, false)
})

t.test('a rule can use it, and the trace shows the count it compared', async (t) => {
  const two = v2.decide(facts({ natureCode: 'EDP', priorCalls: 1, caseManager: true }))
  t.equal(two.route, 'cru', 'a second call is not frequent under v2: CRU, not the case manager')
  const three = v2.decide(facts({ natureCode: 'EDP', priorCalls: 2, caseManager: true }))
  t.equal(three.route, 'case_manager')
  t.equal(three.ruleId, 'repeat-caller-case-manager')
  t.same(three.trace.at(-1)?.conditions[0], { condition: 'repeatCallerWithCaseManager', value: true, result: true })

  const doc = defaultDocument() as { rules: Array<Record<string, unknown>> }
  doc.rules.unshift({
    id: 'frequent-edp-cru',
    principle: 3,
    description: 'Frequent callers on EDP go to CRU.',
    when: { all: [{ natureCode: ['EDP'] }, { fact: 'frequentCaller' }] },
    action: { route: 'cru' },
  })
  const rs = compileRuleSet(parseRuleSet(doc))
  const hit = rs.decide(facts({ natureCode: 'EDP', priorCalls: 4 }))
  t.equal(hit.ruleId, 'frequent-edp-cru')
  t.same(hit.trace[0]?.conditions[1], { condition: 'fact frequentCaller (>= 3 calls for the subject in 30 days)', value: 5, result: true })
  const miss = rs.decide(facts({ natureCode: 'EDP', priorCalls: 0 }))
  t.same(miss.trace[0], { ruleId: 'frequent-edp-cru', matched: false, conditions: [
    { condition: 'natureCode in [EDP]', value: 'EDP', result: true },
    { condition: 'fact frequentCaller (>= 3 calls for the subject in 30 days)', value: 1, result: false },
  ] })
})

t.test('the threshold is validated', async (t) => {
  for (const minCalls of [1, 0, 2.5, 'three']) {
    const doc = defaultDocument() as Record<string, unknown>
    doc.frequentCaller = { minCalls }
    t.throws(() => parseRuleSet(doc), RuleSetError, `minCalls ${String(minCalls)}`)
  }
})
