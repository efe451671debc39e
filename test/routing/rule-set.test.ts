/**
 * Rule-set validation: the default document is valid, and each kind of mistake a supervisor can
 * make is refused with an issue that names where it is.
 */
import t from 'tap'
import { compileRuleSet, parseRuleSet, ruleSetSchema, RuleSetError, type RuleSet } from '../../src/routing/index.js'
import { defaultDocument } from './fixtures/helpers.js'

// Tests build broken documents on purpose, outside what any type allows.
type Loose = any // eslint-disable-line @typescript-eslint/no-explicit-any

const issuesOf = (mutate: (doc: Loose) => void): string[] => {
  const doc: Loose = defaultDocument()
  mutate(doc)
  const result = ruleSetSchema.safeParse(doc)
  if (result.success) return []
  try {
    parseRuleSet(doc)
  } catch (err) {
    if (err instanceof RuleSetError) return err.issues
  }
  return ['(parseRuleSet did not throw a RuleSetError)']
}

const lastIndex = defaultDocument().rules.length - 1

t.test('the shipped default rule set is valid', async (t) => {
  const result = ruleSetSchema.safeParse(defaultDocument())
  t.ok(result.success, result.success ? 'valid' : JSON.stringify(result.error.issues))
  const compiled = compileRuleSet(defaultDocument() as RuleSet)
  t.equal(compiled.version, 1)
  t.equal(compiled.name, 'dakota-county-default')
  t.same(compiled.document, defaultDocument(), 'parsing does not change the document (decisions are replayed from it)')
  t.ok(Object.isFrozen(compiled.document.rules), 'the compiled document cannot drift from its closures')
})

const invalid: { name: string; mutate: (doc: Loose) => void; issue: RegExp }[] = [
  { name: 'an unknown top-level key', mutate: (d) => (d.owner = 'x'), issue: /\(document\): Unrecognized key.*owner/ },
  { name: 'an unknown key in a rule', mutate: (d) => (d.rules[0]!.priority = 1), issue: /rules\[0\]: Unrecognized key.*priority/ },
  { name: 'a version that is not a positive integer', mutate: (d) => (d.version = '2'), issue: /^version: / },
  { name: 'no rules', mutate: (d) => (d.rules = []), issue: /^rules: / },
  { name: 'a duplicate rule id', mutate: (d) => (d.rules[1]!.id = d.rules[0]!.id), issue: /rules\[1\]\.id: rule id safety-medical-mental-health is used twice/ },
  { name: 'a rule id that is not kebab-case', mutate: (d) => (d.rules[0]!.id = 'Safety First'), issue: /rules\[0\]\.id: rule ids are kebab-case/ },
  { name: 'the reserved override id', mutate: (d) => (d.rules[0]!.id = 'dispatcher-override'), issue: /reserved for dispatcher overrides/ },
  { name: 'a last rule with conditions', mutate: (d) => d.rules.pop(), issue: /the last rule \(unknown-nature-code\) must be the default/ },
  { name: 'an unconditional rule before the last', mutate: (d) => (d.rules[2]!.when = { all: [] }), issue: /rules\[2\]\.when: rule safety-mental-health-co-response has no conditions but is not last/ },
  { name: 'a ref to no definition', mutate: (d) => (d.rules[0]!.when = { all: [{ ref: 'saftey' }] }), issue: /rules\[0\]\.when\.all\[0\]\.ref: ref saftey is not a definition/ },
  { name: 'definitions in a cycle', mutate: (d) => { d.definitions.a = { ref: 'b' }; d.definitions.b = { any: [{ flag: 'injury' }, { ref: 'a' }] } }, issue: /definitions refer to themselves: a → b → a/ },
  { name: 'a definition referring to itself', mutate: (d) => (d.definitions.loop = { not: { ref: 'loop' } }), issue: /loop → loop/ },
  { name: 'an unknown flag', mutate: (d) => (d.rules[3]!.when = { all: [{ flag: 'gun' }] }), issue: /rules\[3\]\.when\.all\[0\]\.flag: / },
  { name: 'an unknown fact', mutate: (d) => (d.rules[3]!.when = { all: [{ fact: 'moonPhase' }] }), issue: /rules\[3\]\.when\.all\[0\]\.fact: / },
  { name: 'a numeric fact without a bound', mutate: (d) => (d.rules[3]!.when = { all: [{ fact: 'priority' }] }), issue: /rules\[3\]\.when\.all\[0\]/ },
  { name: 'a condition of no known form', mutate: (d) => (d.rules[3]!.when = { all: [{ hour: 8 }] }), issue: /rules\[3\]\.when\.all\[0\]: not a condition: expected one of all, any/ },
  { name: 'a nature code outside the vocabulary', mutate: (d) => (d.definitions.welfareCall = { natureCode: ['WELLFARE'] }), issue: /definitions\.welfareCall\.natureCode\[0\]: nature code WELLFARE is not in natureCodes/ },
  { name: 'a nature code listed twice', mutate: (d) => d.natureCodes.push('EDP'), issue: /natureCodes\[\d+\]: nature code EDP is listed twice/ },
  { name: 'an agency map onto an unknown code', mutate: (d) => (d.natureCodeMaps['hastings-pd'] = { '10-56': 'SUICIDAL' }), issue: /natureCodeMaps\.hastings-pd\.10-56: hastings-pd maps 10-56 onto SUICIDAL/ },
  { name: 'an action with two primaries', mutate: (d) => (d.rules[1]!.action.assignments = [{ queue: 'police', role: 'primary' }, { queue: 'ems', role: 'primary' }]), issue: /rules\[1\]\.action\.assignments: route police needs exactly one primary assignment, has 2/ },
  { name: 'an action with no primary', mutate: (d) => (d.rules[1]!.action.assignments = [{ queue: 'police', role: 'support' }]), issue: /needs exactly one primary assignment, has 0/ },
  { name: 'a queue assigned twice', mutate: (d) => (d.rules[1]!.action.assignments = [{ queue: 'police', role: 'primary' }, { queue: 'police', role: 'support' }]), issue: /route police assigns a queue twice/ },
  { name: 'a follow_up assignment', mutate: (d) => (d.rules[1]!.action.assignments = [{ queue: 'police', role: 'primary' }, { queue: 'follow_up', role: 'support' }]), issue: /assignments\[1\]\.queue: follow_up is not an assignment/ },
  { name: 'a queue not in the enum', mutate: (d) => (d.routes.police = [{ queue: 'swat', role: 'primary' }]), issue: /routes\.police\[0\]\.queue: / },
  { name: 'a route not in the enum', mutate: (d) => (d.rules[0]!.action.route = 'fire'), issue: /rules\[0\]\.action\.route: / },
  { name: 'a route whose primary disagrees', mutate: (d) => (d.rules[lastIndex]!.action = { route: 'cru', assignments: [{ queue: 'police', role: 'primary' }] }), issue: /route cru must have cru as primary, not police/ },
  { name: 'a co-response without CRU', mutate: (d) => (d.routes.co_response = [{ queue: 'police', role: 'primary' }]), issue: /routes\.co_response: a co_response needs CRU as support/ },
  { name: 'a fallback with a bad assignment', mutate: (d) => (d.rules[0]!.action.fallback!.assignments = [{ queue: 'ems', role: 'primary' }]), issue: /rules\[0\]\.action\.fallback\.assignments: route police must have police as primary/ },
  { name: 'a missing route', mutate: (d) => delete d.routes.case_manager, issue: /routes\.case_manager: / },
  { name: 'no "*" CRU entry', mutate: (d) => delete d.cru['*'], issue: /cru: cru needs a "\*" entry/ },
  { name: 'a badly written time', mutate: (d) => (d.cru['example-city-pd']!.schedule = [{ days: ['mon'], from: '8am', to: '18:00' }]), issue: /cru\.example-city-pd\.schedule\[0\]\.from: expected HH:MM/ },
  { name: 'an empty window', mutate: (d) => (d.cru['example-city-pd']!.schedule = [{ days: ['mon'], from: '08:00', to: '08:00' }]), issue: /window 08:00–08:00 is empty/ },
  { name: 'an unknown day', mutate: (d) => (d.cru['example-city-pd']!.schedule = [{ days: ['monday'], from: '08:00', to: '18:00' }]), issue: /days\[0\]: / },
  { name: 'an unknown time zone', mutate: (d) => (d.timeZone = 'America/Hastings'), issue: /timeZone: unknown IANA time zone/ },
  { name: 'a follow-up in another queue', mutate: (d) => (d.rules[0]!.action.followUp = { queue: 'cru', dueWithinHours: 72 }), issue: /rules\[0\]\.action\.followUp\.queue: / },
  { name: 'a principle outside 1–10', mutate: (d) => (d.rules[0]!.principle = 11), issue: /rules\[0\]\.principle: / },
]

t.test('invalid rule sets are refused, one issue per kind of mistake', async (t) => {
  for (const c of invalid) {
    const issues = issuesOf(c.mutate)
    t.ok(issues.some((i) => c.issue.test(i)), `${c.name}: ${issues.join(' | ') || '(accepted)'}`)
  }
})

t.test('compileRuleSet throws a RuleSetError listing every issue', async (t) => {
  const doc: Loose = defaultDocument()
  doc.rules[1]!.id = doc.rules[0]!.id
  doc.definitions.welfareCall = { natureCode: ['WELLFARE'] }
  const err = t.throws(() => compileRuleSet(doc as RuleSet)) as unknown
  t.ok(err instanceof RuleSetError)
  if (err instanceof RuleSetError) {
    t.equal(err.issues.length, 2)
    t.match(err.message, /^invalid rule set: /)
    t.equal(err.name, 'RuleSetError')
  }
})

t.test('a minimal rule set: routes, a "*" CRU entry and a default rule', async (t) => {
  const police = [{ queue: 'police' as const, role: 'primary' as const }]
  const minimal = {
    name: 'minimal',
    version: 7,
    description: '',
    natureCodes: ['NOISE'],
    cru: { '*': { schedule: 'always' as const } },
    routes: {
      police,
      cru: [{ queue: 'cru' as const, role: 'primary' as const }],
      co_response: [...police, { queue: 'cru' as const, role: 'support' as const }],
      ems: [{ queue: 'ems' as const, role: 'primary' as const }],
      case_manager: [{ queue: 'case_management' as const, role: 'primary' as const }],
    },
    rules: [{ id: 'default', principle: 9, description: 'Police.', when: { all: [] }, action: { route: 'police' as const } }],
  }
  const compiled = compileRuleSet(minimal)
  t.equal(compiled.version, 7)
})
