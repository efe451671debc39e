/**
 * Verification before activation: the shipped rule set passes with a coverage report, and each
 * kind of mistake is caught by one bad rule set of its own, with a finding that says where.
 */
import t from 'tap'
import { compileRuleSet, formatReport, loadDefaultRuleSet, verifyRuleSet, verifyRuleSetAsync, type FindingKind, type VerificationReport } from '../../src/routing/index.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

// Tests build broken documents on purpose, outside what any type allows.
type Loose = any // eslint-disable-line @typescript-eslint/no-explicit-any

const verify = (mutate: (doc: Loose) => void): VerificationReport => {
  const doc: Loose = defaultDocument()
  mutate(doc)
  return verifyRuleSet(doc)
}
const ruleIndex = (id: string) => defaultDocument().rules.findIndex((r) => r.id === id)
const kinds = (r: VerificationReport) => [...new Set(r.findings.map((f) => f.kind))]

const defaultReport = verifyRuleSet(loadDefaultRuleSet())

t.test('the shipped default rule set passes, over its whole fact space', async (t) => {
  t.ok(defaultReport.ok, formatReport(defaultReport))
  t.same(defaultReport.findings, [])
  t.ok(defaultReport.factSpace!.classes > 100_000, `${defaultReport.factSpace!.classes} classes of calls`)
  t.match(formatReport(defaultReport), /^rule set 1 passed verification/)
})

t.test('the coverage report says which nature codes and flags reach each route', async (t) => {
  const route = (r: string) => defaultReport.coverage.find((c) => c.route === r)!
  t.same(defaultReport.coverage.map((c) => c.route), ['police', 'cru', 'co_response', 'ems', 'case_manager'])
  const cru = route('cru')
  t.same(cru.rules.map((r) => r.ruleId), ['mental-health-cru'], 'only one rule sends calls to CRU')
  t.same(cru.natureCodes, ['CITASST', 'EDP', 'INTOX', 'SUICIDE', 'SUICTHRT', 'WELFARE'])
  t.notOk(cru.rules[0]!.unlistedNatureCodes, 'an unknown code never reaches CRU')
  for (const flag of ['weapons', 'violence', 'threatToOthers', 'crimeInProgress', 'medicalEmergency', 'injury']) {
    t.ok(cru.rules[0]!.flagsNever.includes(flag as never), `CRU never sees ${flag}`)
  }
  const police = route('police')
  const fallback = police.rules.find((r) => r.ruleId === 'mental-health-cru')
  t.ok(fallback?.fallback, 'mental-health-cru reaches police only through its CRU fallback (rule 7)')
  t.ok(route('police').natureCodes.includes('NOISE'))
  t.ok(police.rules.find((r) => r.ruleId === 'unknown-nature-code')?.unlistedNatureCodes)
  const caseManager = route('case_manager')
  t.same(caseManager.rules.map((r) => r.ruleId), ['repeat-caller-case-manager'])
  t.same(caseManager.natureCodes, ['CITASST', 'EDP', 'INTOX', 'SUICIDE', 'SUICTHRT', 'WELFARE'])
})

interface Bad {
  kind: FindingKind
  name: string
  mutate: (doc: Loose) => void
  message: RegExp
  ruleId?: string
}

const bad: Bad[] = [
  { kind: 'schema', name: 'a condition of no known form', mutate: (d) => (d.rules[3].when = { all: [{ hour: 8 }] }), message: /rules\[3\]\.when\.all\[0\]: not a condition/ },
  { kind: 'schema', name: 'a version that is not a number', mutate: (d) => (d.version = 'two'), message: /^version: / },
  {
    kind: 'unknown-queue',
    name: 'an assignment to a queue that does not exist',
    mutate: (d) => (d.rules[1].action.assignments = [{ queue: 'police', role: 'primary' }, { queue: 'fire', role: 'support' }]),
    message: /rules\[1\]\.action\.assignments\[1\]\.queue: /,
  },
  { kind: 'unknown-route', name: 'an action with a route that does not exist', mutate: (d) => (d.rules[3].action.route = 'social_work'), message: /rules\[3\]\.action\.route: / },
  { kind: 'unknown-route', name: 'a route table entry that does not exist', mutate: (d) => (d.routes.fire = [{ queue: 'police', role: 'primary' }]), message: /routes: .*fire/ },
  { kind: 'duplicate-rule-id', name: 'two rules with one id', mutate: (d) => (d.rules[4].id = d.rules[2].id), message: /rule id safety-mental-health-co-response is used twice/ },
  { kind: 'no-default-rule', name: 'no unconditional last rule', mutate: (d) => d.rules.pop(), message: /the last rule \(unknown-nature-code\) must be the default/ },
  {
    kind: 'one-primary-invariant',
    name: 'an action with two primaries',
    mutate: (d) => (d.rules[6].action.assignments = [{ queue: 'ems', role: 'primary' }, { queue: 'police', role: 'primary' }]),
    message: /needs exactly one primary assignment, has 2/,
  },
  {
    kind: 'shadowed-rule',
    name: 'a rule placed after a broader one',
    // medical-mental-health after medical-ems: every call it matches is taken by medical-ems first.
    mutate: (d) => {
      const i = d.rules.findIndex((r: Loose) => r.id === 'medical-mental-health')
      const [rule] = d.rules.splice(i, 1)
      d.rules.splice(i + 1, 0, rule)
    },
    message: /rule medical-mental-health can never fire: every call it matches is decided earlier, by .*medical-co-response, medical-ems$/,
    ruleId: 'medical-mental-health',
  },
  {
    kind: 'unsatisfiable-rule',
    name: 'a rule whose conditions contradict each other',
    mutate: (d) => d.rules.splice(-1, 0, { id: 'never', principle: 9, description: 'Contradiction.', when: { all: [{ flag: 'weapons' }, { not: { flag: 'weapons' } }] }, action: { route: 'police' } }),
    message: /rule never can never fire: no call satisfies its conditions/,
    ruleId: 'never',
  },
  {
    kind: 'police-invariant',
    name: 'weapons sent to CRU',
    mutate: (d) => d.rules.unshift({ id: 'armed-crisis-cru', principle: 3, description: 'Armed person in crisis: CRU.', when: { all: [{ flag: 'weapons' }, { fact: 'mentalHealthIndicator' }] }, action: { route: 'cru' } }),
    message: /rule armed-crisis-cru can decide a call with weapons.*without police as primary/,
    ruleId: 'armed-crisis-cru',
  },
  {
    kind: 'police-invariant',
    name: 'a violent nature code the rule set forgot (SHOOT dropped from "safety") reaching CRU',
    mutate: (d) => {
      const any = d.definitions.safety.any
      any[4].natureCode = any[4].natureCode.filter((c: string) => c !== 'SHOOT')
      d.definitions.mentalHealthCall.natureCode.push('SHOOT')
    },
    message: /rule mental-health-cru can decide a call .*without police/,
    ruleId: 'mental-health-cru',
  },
  {
    // The shipped set once forgot ABDUCTNF beside ABDUCTF: with an injury, a kidnapping went to EMS alone.
    kind: 'police-invariant',
    name: 'an abduction code the rule set forgot (ABDUCTNF dropped from "safety") reaching EMS alone',
    mutate: (d) => {
      const any = d.definitions.safety.any
      any[4].natureCode = any[4].natureCode.filter((c: string) => c !== 'ABDUCTNF')
    },
    message: /rule medical-ems can decide a call .*without police/,
    ruleId: 'medical-ems',
  },
  {
    kind: 'police-invariant',
    name: 'a co-response whose CRU fallback drops police',
    mutate: (d) => (d.rules[2].action.fallback = { when: { not: { fact: 'cruAvailable' } }, route: 'cru', reason: 'no' }),
    message: /rule safety-mental-health-co-response can decide/,
    ruleId: 'safety-mental-health-co-response',
  },
  {
    kind: 'cru-availability-invariant',
    name: 'a CRU rule without its fallback (crisis calls queued to CRU after hours)',
    mutate: (d) => delete d.rules[ruleIndex('mental-health-cru')].action.fallback,
    message: /rule mental-health-cru can assign CRU while CRU is not available/,
    ruleId: 'mental-health-cru',
  },
  // Checks added after rule sets were first stored: verification's, not the schema's (below).
  // DESIGN rule 2: EMS is offered again, never escalated away (a declined EMS support was dropped, an EMS primary replaced).
  { kind: 'schema', name: 'an escalation of EMS', mutate: (d) => (d.escalation.ems = 'police'), message: /escalation\.ems: EMS is never escalated away/ },
  // A follow-up's call is closed: a fallback route would send responders to it.
  { kind: 'schema', name: 'an escalation of a follow-up', mutate: (d) => (d.escalation.follow_up = 'case_manager'), message: /escalation\.follow_up: a follow-up is never escalated to a route/ },
  // Agency ids are compared exactly, as the wire contract writes them: one no call can carry is a typo that silently does nothing.
  { kind: 'schema', name: 'CRU hours for an agency id no call can carry', mutate: (d) => (d.cru['Hastings-PD'] = { schedule: [{ days: ['mon'], from: '08:00', to: '18:00' }] }), message: /cru\.Hastings-PD: no call can have agency Hastings-PD/ },
  { kind: 'schema', name: 'a code map for an agency id no call can carry', mutate: (d) => (d.natureCodeMaps['Hastings PD'] = { '10-56': 'SUICTHRT' }), message: /natureCodeMaps\.Hastings PD: no call can have agency Hastings PD/ },
  // A map from a listed code would hide it from the invariants, which are proved on the code after the map.
  { kind: 'schema', name: 'a code map that turns a shooting into a crisis call', mutate: (d) => (d.natureCodeMaps['hastings-pd'] = { '10-56': 'SUICTHRT', SHOOT: 'EDP' }), message: /natureCodeMaps\.hastings-pd\.SHOOT: hastings-pd maps SHOOT, a code of natureCodes or one whose meaning DESIGN fixes/ },
  {
    kind: 'schema',
    name: 'a code map from a code DESIGN fixes that the set does not list',
    mutate: (d) => {
      d.natureCodes = d.natureCodes.filter((c: string) => c !== 'OD')
      d.definitions.medical.any[2].natureCode = d.definitions.medical.any[2].natureCode.filter((c: string) => c !== 'OD')
      d.natureCodeMaps['hastings-pd'] = { OD: 'NOISE' }
    },
    message: /natureCodeMaps\.hastings-pd\.OD: hastings-pd maps OD/,
  },
  { kind: 'schema', name: 'an agency condition no call can meet', mutate: (d) => (d.rules[3].when = { all: [{ agency: ['hastings-pd', 'Rosemount-PD'] }] }), message: /rules\[3\]\.when\.all\[0\]\.agency\[1\]: no call can have agency Rosemount-PD/ },
  { kind: 'schema', name: 'an agency in a nested definition no call can meet', mutate: (d) => (d.definitions.pilot = { not: { any: [{ flag: 'injury' }, { agency: ['Hastings-PD'] }] } }), message: /definitions\.pilot\.not\.any\[1\]\.agency\[0\]: no call can have agency Hastings-PD/ },
  {
    kind: 'ems-invariant',
    name: 'an overdose routed to police only',
    mutate: (d) => d.rules.unshift({ id: 'overdose-police', principle: 9, description: 'Overdose: police.', when: { all: [{ natureCode: ['OD'] }] }, action: { route: 'police' } }),
    message: /rule overdose-police can decide a call with a medical emergency.*without EMS/,
    ruleId: 'overdose-police',
  },
]

for (const b of bad) {
  t.test(`${b.kind}: ${b.name}`, async (t) => {
    const report = verify(b.mutate)
    t.notOk(report.ok, 'refused')
    const found = report.findings.filter((f) => f.kind === b.kind)
    t.ok(found.length > 0, `a ${b.kind} finding (got ${kinds(report).join(', ')})`)
    t.ok(
      found.some((f) => b.message.test(f.message) && (b.ruleId === undefined || f.ruleId === b.ruleId)),
      `a finding matches ${b.message}: ${found.map((f) => f.message).join(' | ')}`,
    )
    if (b.kind.endsWith('-invariant') && b.kind !== 'one-primary-invariant') {
      t.ok(found[0]!.examples!.length > 0, `with example calls, e.g. ${found[0]!.examples![0]}`)
    }
    const text = formatReport(report)
    t.match(text, new RegExp(`failed verification with ${report.findings.length} finding`))
    t.match(text, `[${b.kind}]`)
  })
}

t.test('a stored version that breaks a check added since still compiles: an upgrade never refuses the active rule set at start', async (t) => {
  const doc: Loose = defaultDocument()
  doc.escalation.ems = 'police'
  doc.escalation.follow_up = 'case_manager'
  doc.cru['Hastings-PD'] = { schedule: 'always' }
  const compiled = compileRuleSet(doc)
  t.equal(compiled.version, doc.version, 'the registry compiles it')
  const report = verifyRuleSet(doc)
  t.notOk(report.ok, 'verification (a new version, an activation) refuses it')
  t.same(report.findings.map((f) => f.path), ['cru.Hastings-PD', 'escalation.ems', 'escalation.follow_up'])
})

t.test('the shipped rules as stored before the abductions joined the safety codes: refused as new, proved as stored (a rollback to them goes through)', async (t) => {
  const doc: Loose = defaultDocument()
  const any = doc.definitions.safety.any
  any[4].natureCode = any[4].natureCode.filter((c: string) => c !== 'ABDUCTNF')
  doc.natureCodeMaps['hastings-pd'] = { '10-56': 'SUICTHRT', ABDUCTNF: 'NOISE' }
  const fresh = await verifyRuleSetAsync(doc)
  t.notOk(fresh.ok, 'as a new version')
  t.ok(fresh.findings.some((f) => f.kind === 'police-invariant' && f.ruleId === 'medical-ems'), 'ABDUCTNF with an injury reaches EMS alone')
  t.ok(fresh.findings.some((f) => f.path === 'natureCodeMaps.hastings-pd.ABDUCTNF'), 'and the map of a safety code')
  const stored = await verifyRuleSetAsync(doc, { asStored: true })
  t.ok(stored.ok, `as stored: ${stored.findings.map((f) => f.message).join(' | ') || 'no findings'}`)
})

t.test('several rules that never fire are each told apart, shadowed or unsatisfiable, in one more pass', async (t) => {
  const report = verify((d) => {
    const first = d.rules[0]
    for (let k = 0; k < 12; k++) d.rules.splice(1, 0, { ...structuredClone(first), id: `copy-${k}` })
    d.rules.splice(-1, 0, { id: 'never', principle: 9, description: 'Contradiction.', when: { all: [{ flag: 'injury' }, { not: { flag: 'injury' } }] }, action: { route: 'police' } })
  })
  t.same(
    report.findings.map((f) => [f.kind, f.ruleId]),
    [...Array.from({ length: 12 }, (_, k) => ['shadowed-rule', `copy-${11 - k}`]), ['unsatisfiable-rule', 'never']],
  )
  for (const f of report.findings.slice(0, 12)) t.match(f.message, new RegExp(`decided earlier, by ${defaultDocument().rules[0]!.id}$`))
})

t.test('a rule set whose fact space is too large to prove is refused, not run for minutes', async (t) => {
  const report = verify((d) => {
    // Every code its own class and forty distinct agency lists: far beyond the limit.
    for (let i = 0; i < d.natureCodes.length; i++) d.definitions[`c${i}`] = { natureCode: d.natureCodes.slice(0, i + 1) }
    for (let i = 0; i < 40; i++) d.definitions[`a${i}`] = { agency: [`agency-${i}`] }
    const refs: Loose[] = [...Object.keys(d.definitions).filter((k) => /^[ca]\d+$/.test(k)).map((ref) => ({ ref }))]
    d.rules.splice(-1, 0, { id: 'huge', principle: 9, description: 'Huge.', when: { any: refs.concat([{ flag: 'substanceUse' }]) }, action: { route: 'police' } })
  })
  t.same(kinds(report), ['fact-space-too-large'])
  t.match(report.findings[0]!.message, /cannot be proven safe/)
})

t.test('anything that is not a rule set is a schema finding, not an exception', async (t) => {
  for (const input of [null, 42, 'rules', [], {}]) {
    const report = verifyRuleSet(input)
    t.notOk(report.ok)
    t.ok(report.findings.length > 0 && report.findings.every((f) => f.kind === 'schema'), JSON.stringify(input))
  }
})

t.test('the asynchronous proof gives the same report and lets other work run meanwhile', async (t) => {
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const report = await verifyRuleSetAsync(loadDefaultRuleSet())
  clearInterval(timer)
  t.same(report, defaultReport)
  t.ok(ticks >= 3, `a timer ran ${ticks} times during the proof`)
})
