/**
 * Time-of-day and day-of-week conditions, read in the agency's own time zone from the decision's
 * instant (a fact): the engine, its trace, and verification over the time slots they create.
 */
import t from 'tap'
import { compileRuleSet, verifyRuleSet, type RuleSet } from '../../src/routing/index.js'
import { defaultDocument, facts } from '../routing/fixtures/helpers.js'

// Documents built on purpose outside what the default document's type allows.
type Loose = any // eslint-disable-line @typescript-eslint/no-explicit-any

/** The default rule set with "mental-health calls in office hours go to the embedded worker's case manager". */
function withOfficeHours(): Loose {
  const doc: Loose = defaultDocument()
  doc.cru['ny-pd'] = { schedule: 'always', timeZone: 'America/New_York' }
  const i = doc.rules.findIndex((r: Loose) => r.id === 'mental-health-cru')
  doc.rules.splice(i, 0, {
    id: 'office-hours-case-manager',
    principle: 6,
    description: 'A mental-health call in office hours: the embedded case manager takes it, with CRU as support.',
    when: { all: [{ fact: 'mentalHealthIndicator' }, { ref: 'mentalHealthCall' }, { time: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '17:00' } }] },
    action: { route: 'case_manager', followUp: { queue: 'follow_up', dueWithinHours: 72 }, fallback: { when: { not: { fact: 'cruAvailable' } }, route: 'police', reason: 'CRU is not available ({cruReason})' } },
  })
  return doc
}

t.test('the engine reads local time in the agency’s zone, across a DST change', async (t) => {
  const rs = compileRuleSet(withOfficeHours() as RuleSet)
  const decide = (agency: string, at: string) => rs.decide({ ...facts({ agency, natureCode: 'EDP', flags: { mentalHealth: true } }), at })
  t.equal(decide('hastings-pd', '2026-03-06T14:00:00Z').ruleId, 'office-hours-case-manager', 'Fri 08:00 CST')
  t.equal(decide('hastings-pd', '2026-03-06T13:59:00Z').ruleId, 'mental-health-cru', 'Fri 07:59 CST')
  t.equal(decide('hastings-pd', '2026-03-09T13:00:00Z').ruleId, 'office-hours-case-manager', 'Mon 08:00 CDT: the same UTC hour was closed before the change')
  t.equal(decide('hastings-pd', '2026-03-07T16:00:00Z').ruleId, 'mental-health-cru', 'Saturday')
  t.equal(decide('ny-pd', '2026-03-06T13:00:00Z').ruleId, 'office-hours-case-manager', 'Fri 08:00 in New York is 07:00 in Chicago')
  const d = decide('hastings-pd', '2026-03-06T19:05:00Z')
  const cond = d.trace.find((r) => r.ruleId === 'office-hours-case-manager')!.conditions.find((c) => c.condition.startsWith('time'))!
  t.same(cond, { condition: 'time Mon–Fri 08:00–17:00', value: 'Fri 13:05', result: true }, 'the trace shows the local time it saw')
})

t.test('verification enumerates the time slots: a rule set with office hours passes', async (t) => {
  const report = verifyRuleSet(withOfficeHours())
  t.ok(report.ok, report.findings.map((f) => f.message).join('; '))
  const cm = report.coverage.find((c) => c.route === 'case_manager')!
  t.same(cm.rules.map((r) => r.ruleId), ['repeat-caller-case-manager', 'office-hours-case-manager'])
})

t.test('safety that holds only in office hours is caught, with the hour that breaks it', async (t) => {
  const doc: Loose = defaultDocument()
  doc.definitions.safety = { all: [doc.definitions.safety, { time: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '17:00' } }] }
  const report = verifyRuleSet(doc)
  t.notOk(report.ok)
  const police = report.findings.filter((f) => f.kind === 'police-invariant')
  t.ok(police.length > 0)
  t.ok(police.some((f) => f.examples!.some((e) => /at (Sat|Sun|Mon 00:00|Mon 17:00|Fri 17:00)/.test(e))), police.flatMap((f) => f.examples).join(' | '))
})

// DESIGN rule 7, as the default's CRU rules have it: without it every CRU rule is a finding too.
const CRU_FALLBACK = { when: { not: { fact: 'cruAvailable' } }, route: 'police', reason: 'CRU is not available ({cruReason})' }

t.test('a rule inside a broader earlier time window is shadowed', async (t) => {
  const doc: Loose = defaultDocument()
  const i = doc.rules.findIndex((r: Loose) => r.id === 'mental-health-cru')
  const rule = (id: string, time: object) => ({ id, principle: 3, description: id, when: { all: [{ fact: 'mentalHealthIndicator' }, { ref: 'mentalHealthCall' }, { time }] }, action: { route: 'cru', fallback: CRU_FALLBACK } })
  doc.rules.splice(i, 0, rule('daytime', { from: '07:00', to: '19:00' }), rule('tuesday-morning', { days: ['tue'], from: '09:00', to: '10:00' }))
  const report = verifyRuleSet(doc)
  t.match(report.findings, [{ kind: 'shadowed-rule', ruleId: 'tuesday-morning', message: /decided earlier, by .*daytime/ }])
})

t.test('an empty time window is a schema finding', async (t) => {
  const doc: Loose = defaultDocument()
  doc.rules[3].when = { all: [{ ref: 'safety' }, { time: { from: '08:00', to: '08:00' } }] }
  t.match(verifyRuleSet(doc).findings, [{ kind: 'schema', message: /time window 08:00–08:00 is empty or ambiguous/ }])
})
