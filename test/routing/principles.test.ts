/**
 * The ten routing principles of DESIGN.md, one table each, against the shipped default rule set.
 */
import t from 'tap'
import { expectDecision, facts, roles, ruleSet, type Expectation } from './fixtures/helpers.js'

const table = (title: string, cases: Expectation[]) =>
  t.test(title, async (t) => {
    for (const c of cases) expectDecision(t, c)
  })

table('principle 1: safety first — police lead on weapons, violence, threats and crimes in progress', [
  { name: 'weapons on a noise call → police', facts: { natureCode: 'NOISE', flags: { weapons: true } }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-police', followUp: false },
  { name: 'assault code alone → police', facts: { natureCode: 'ASSAULT' }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-police', followUp: false },
  { name: 'domestic with assault → police', facts: { natureCode: 'DVA', flags: { violence: true } }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-police' },
  { name: 'EDP with weapons → co-response', facts: { natureCode: 'EDP', flags: { weapons: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'threats with a mental-health flag → co-response', facts: { natureCode: 'THREATS', flags: { mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'EDP with a threat to others, CRU closed → police, CRU support dropped', facts: { natureCode: 'EDP', flags: { threatToOthers: true }, cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-mental-health-co-response', fallbackFrom: 'co_response', followUp: true },
  { name: 'suicidal with means and a crime in progress → safety rule, not rule 4', facts: { natureCode: 'SUICTHRT', flags: { crimeInProgress: true, suicidalIdeation: true, meansAtHand: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'abduction by a stranger, with injury → police primary, EMS beside', facts: { natureCode: 'ABDUCTNF', flags: { injury: true } }, route: 'police', assignments: ['police:primary', 'ems:support'], ruleId: 'safety-medical', followUp: false },
  { name: 'abduction by a stranger, mental-health flag → co-response, never CRU alone', facts: { natureCode: 'ABDUCTNF', flags: { mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'stabbing with injury → police primary, EMS beside', facts: { natureCode: 'STABBING', flags: { weapons: true, injury: true } }, route: 'police', assignments: ['police:primary', 'ems:support'], ruleId: 'safety-medical', followUp: false },
  { name: 'shooting with injury and mental-health flag → police, EMS and CRU', facts: { natureCode: 'SHOOT', flags: { injury: true, mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'ems:support', 'cru:support'], ruleId: 'safety-medical-mental-health', followUp: true },
  { name: 'same, CRU closed → police and EMS', facts: { natureCode: 'SHOOT', flags: { injury: true, mentalHealth: true }, cru: false }, route: 'police', assignments: ['police:primary', 'ems:support'], ruleId: 'safety-medical-mental-health', fallbackFrom: 'co_response', followUp: true },
  { name: 'trespass (a crime) with a mental-health flag → police-led co-response', facts: { natureCode: 'TRESPASS', flags: { mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'mental-health-police-led-co-response', followUp: true },
  { name: 'disorderly with suicidal ideation → police-led co-response', facts: { natureCode: 'DISORD', flags: { suicidalIdeation: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'mental-health-police-led-co-response', followUp: true },
  { name: 'case-managed repeat caller with violence → never the case manager', facts: { natureCode: 'EDP', flags: { violence: true }, priorCalls: 3, caseManager: true }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'co-response requested on a weapons call → rule 1, police', facts: { natureCode: 'WEAPON', flags: { coResponseRequested: true } }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-police', followUp: false },
])

table('principle 2: medical emergencies always get EMS', [
  { name: 'overdose → EMS', facts: { natureCode: 'OD' }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems', followUp: false },
  { name: 'sick person with medical flag → EMS', facts: { natureCode: 'SICK', flags: { medicalEmergency: true } }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems' },
  { name: 'crash with injuries → EMS', facts: { natureCode: 'MVAINJY' }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems' },
  { name: 'injury flag on a noise call → EMS', facts: { natureCode: 'NOISE', flags: { injury: true } }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems' },
  { name: 'suicide attempt with injury → EMS primary, CRU support', facts: { natureCode: 'SUICIDE', flags: { injury: true } }, route: 'ems', assignments: ['ems:primary', 'cru:support'], ruleId: 'medical-mental-health', followUp: true },
  { name: 'overdose with mental-health flag, CRU closed → EMS alone', facts: { natureCode: 'OD', flags: { mentalHealth: true }, cru: false }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-mental-health', fallbackFrom: 'ems', followUp: true },
  { name: 'cardiac with a weapon on scene → police primary, EMS beside', facts: { natureCode: 'CARDIAC', flags: { weapons: true } }, route: 'police', assignments: ['police:primary', 'ems:support'], ruleId: 'safety-medical' },
  { name: 'suicidal with means and injured → EMS, police and CRU', facts: { natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true, injury: true } }, route: 'ems', assignments: ['ems:primary', 'police:support', 'cru:support'], ruleId: 'medical-co-response', followUp: true },
  { name: 'fall with a co-response requested → EMS, police and CRU, no follow-up', facts: { natureCode: 'FALL', flags: { coResponseRequested: true } }, route: 'ems', assignments: ['ems:primary', 'police:support', 'cru:support'], ruleId: 'medical-co-response', followUp: false },
  { name: 'same, CRU closed → EMS and police', facts: { natureCode: 'FALL', flags: { coResponseRequested: true }, cru: false }, route: 'ems', assignments: ['ems:primary', 'police:support'], ruleId: 'medical-co-response', fallbackFrom: 'ems' },
  { name: 'case-managed repeat caller with an overdose → EMS, not the case manager', facts: { natureCode: 'OD', flags: { mentalHealth: true }, priorCalls: 2, caseManager: true }, route: 'ems', assignments: ['ems:primary', 'cru:support'], ruleId: 'medical-mental-health', followUp: true },
])

table('principle 3: non-criminal, non-violent mental-health calls go to CRU', [
  { name: 'EDP → CRU', facts: { natureCode: 'EDP' }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru', followUp: true },
  { name: 'suicide threat without means → CRU', facts: { natureCode: 'SUICTHRT', flags: { suicidalIdeation: true } }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru', followUp: true },
  { name: 'welfare check with a mental-health flag → CRU', facts: { natureCode: 'WELFARE', flags: { mentalHealth: true } }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru', followUp: true },
  { name: 'citizen assist, person in distress → CRU', facts: { natureCode: 'CITASST', flags: { mentalHealth: true } }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru' },
  { name: 'intoxicated person with a mental-health flag → CRU', facts: { natureCode: 'INTOX', flags: { mentalHealth: true, substanceUse: true } }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru' },
  { name: "Hastings' own code 10-56 maps to SUICTHRT → CRU", facts: { agency: 'hastings-pd', natureCode: '10-56' }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru', followUp: true },
  { name: 'welfare check without an indicator → police, as today', facts: { natureCode: 'WELFARE' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police', followUp: false },
])

table('principle 4: a suicidal person with means at hand is a co-response', [
  { name: 'suicide threat with means → co-response', facts: { natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'suicidal-means-at-hand-co-response', followUp: true },
  { name: 'welfare check, suicidal with means → co-response', facts: { natureCode: 'WELFARE', flags: { suicidalIdeation: true, meansAtHand: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'suicidal-means-at-hand-co-response' },
  { name: 'suicide code with means, no flag → co-response', facts: { natureCode: 'SUICIDE', flags: { meansAtHand: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'suicidal-means-at-hand-co-response' },
  { name: 'with a threat to others → rule 1 instead', facts: { natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true, threatToOthers: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response' },
  { name: 'means at hand without suicidality → police', facts: { natureCode: 'NOISE', flags: { meansAtHand: true } }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police', followUp: false },
])

table('principle 5: co-response requested (and no rule-1 facts) is a co-response', [
  { name: 'requested on a welfare check with MH → co-response with follow-up', facts: { natureCode: 'WELFARE', flags: { coResponseRequested: true, mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'co-response-requested', followUp: true },
  { name: 'requested on a noise call → co-response, no follow-up', facts: { natureCode: 'NOISE', flags: { coResponseRequested: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'co-response-requested', followUp: false },
  { name: 'requested for a case-managed repeat caller → the request wins', facts: { natureCode: 'EDP', flags: { coResponseRequested: true }, priorCalls: 1, caseManager: true }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'co-response-requested', followUp: true },
  { name: 'requested with violence → rule 1', facts: { natureCode: 'EDP', flags: { coResponseRequested: true, violence: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response' },
])

table('principle 6: a repeat caller with an active case manager goes to the case manager', [
  { name: 'EDP, a prior call, case manager → case manager with CRU', facts: { natureCode: 'EDP', priorCalls: 1, caseManager: true }, route: 'case_manager', assignments: ['case_management:primary', 'cru:support'], ruleId: 'repeat-caller-case-manager', followUp: true },
  { name: 'welfare check without an indicator, case manager → case manager, no follow-up', facts: { natureCode: 'WELFARE', priorCalls: 2, caseManager: true }, route: 'case_manager', assignments: ['case_management:primary', 'cru:support'], ruleId: 'repeat-caller-case-manager', followUp: false },
  { name: 'a first call → CRU', facts: { natureCode: 'EDP', priorCalls: 0, caseManager: true }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru' },
  { name: 'no case manager → CRU', facts: { natureCode: 'EDP', priorCalls: 4, caseManager: false }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru' },
  { name: 'a crime with a mental-health flag → police-led, not the case manager', facts: { natureCode: 'TRESPASS', flags: { mentalHealth: true }, priorCalls: 1, caseManager: true }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'mental-health-police-led-co-response' },
  { name: 'noise without an indicator → police', facts: { natureCode: 'NOISE', priorCalls: 1, caseManager: true }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police' },
])

table('principle 7: when CRU is not available, calls for CRU go to police with the reason recorded', [
  { name: 'EDP, CRU closed → police', facts: { natureCode: 'EDP', cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'mental-health-cru', fallbackFrom: 'cru', followUp: true },
  { name: 'EDP, CRU over capacity → police, with that reason', facts: { natureCode: 'EDP', cru: 'CRU over capacity (6 of 6 staff on calls)' }, route: 'police', assignments: ['police:primary'], ruleId: 'mental-health-cru', fallbackFrom: 'cru' },
  { name: 'suicidal with means, CRU closed → police', facts: { natureCode: 'SUICTHRT', flags: { suicidalIdeation: true, meansAtHand: true }, cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'suicidal-means-at-hand-co-response', fallbackFrom: 'co_response' },
  { name: 'co-response requested, CRU closed → police', facts: { natureCode: 'NOISE', flags: { coResponseRequested: true }, cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'co-response-requested', fallbackFrom: 'co_response' },
  { name: 'case-managed repeat caller, CRU closed → police', facts: { natureCode: 'EDP', priorCalls: 1, caseManager: true, cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'repeat-caller-case-manager', fallbackFrom: 'case_manager', followUp: true },
  { name: 'police-led co-response, CRU closed → police', facts: { natureCode: 'TRESPASS', flags: { mentalHealth: true }, cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'mental-health-police-led-co-response', fallbackFrom: 'co_response' },
  { name: 'a police call is unaffected', facts: { natureCode: 'NOISE', cru: false }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police', fallbackFrom: null },
])

t.test('principle 7: the fallback reason and explanation', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'EDP', cru: false }))
  t.equal(d.fallback?.reason, 'CRU is not available (outside CRU hours for example-city-pd (Mon–Fri 08:00–18:00 America/Chicago)), so the call goes to police')
  t.match(d.explanation, /Principle 7 \(CRU fallback\)/)
  const noReason = ruleSet.decide({ ...facts({ natureCode: 'EDP' }), cru: { available: false, reason: null } })
  t.match(noReason.fallback?.reason, 'CRU reported unavailable')
})

table('principle 8: every mental-health call gets a 72-hour follow-up', [
  { name: 'EDP', facts: { natureCode: 'EDP' }, route: 'cru', assignments: ['cru:primary'], ruleId: 'mental-health-cru', followUp: true },
  { name: 'assault with mental-health flag', facts: { natureCode: 'ASSAULT', flags: { mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'safety-mental-health-co-response', followUp: true },
  { name: 'unknown code with suicidal ideation', facts: { natureCode: 'ZZ-WHAT', flags: { suicidalIdeation: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'mental-health-police-led-co-response', review: ['unknown-nature-code'], followUp: true },
  { name: 'parking with a mental-health flag', facts: { natureCode: 'PARKING', flags: { mentalHealth: true } }, route: 'co_response', assignments: ['police:primary', 'cru:support'], ruleId: 'mental-health-police-led-co-response', followUp: true },
  { name: 'overdose without an indicator: none', facts: { natureCode: 'OD' }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems', followUp: false },
  { name: 'noise: none', facts: { natureCode: 'NOISE' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police', followUp: false },
])

t.test('principle 8: the follow-up is a policy, never an assignment of the call', async (t) => {
  const d = ruleSet.decide(facts({ natureCode: 'EDP' }))
  t.notOk(d.assignments.some((a) => a.queue === 'follow_up'))
  t.same(d.followUp, { queue: 'follow_up', dueWithinHours: 72 })
})

table('principle 9: everything else goes to police; unknown codes are marked for review', [
  { name: 'noise', facts: { natureCode: 'NOISE' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police', followUp: false },
  { name: 'parking', facts: { natureCode: 'PARKING' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police' },
  { name: 'crash without injuries', facts: { natureCode: 'MVA' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police' },
  { name: 'burglary report', facts: { natureCode: 'BURGLARY' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police' },
  { name: 'larceny', facts: { natureCode: 'LARCENY' }, route: 'police', assignments: ['police:primary'], ruleId: 'default-police' },
  { name: 'unknown code', facts: { natureCode: 'ZZ-WHAT' }, route: 'police', assignments: ['police:primary'], ruleId: 'unknown-nature-code', review: ['unknown-nature-code'], followUp: false },
  { name: "another agency's 10-56 is not mapped", facts: { agency: 'rosemount-pd', natureCode: '10-56' }, route: 'police', assignments: ['police:primary'], ruleId: 'unknown-nature-code', review: ['unknown-nature-code'] },
  { name: 'lower-case code is not the APCO code', facts: { natureCode: 'edp' }, route: 'police', assignments: ['police:primary'], ruleId: 'unknown-nature-code', review: ['unknown-nature-code'] },
  { name: 'unknown code with a weapon → safety rule, still marked for review', facts: { natureCode: 'ZZ-WHAT', flags: { weapons: true } }, route: 'police', assignments: ['police:primary'], ruleId: 'safety-police', review: ['unknown-nature-code'] },
  { name: 'unknown code with a medical emergency → EMS, marked for review', facts: { natureCode: 'ZZ-WHAT', flags: { medicalEmergency: true } }, route: 'ems', assignments: ['ems:primary'], ruleId: 'medical-ems', review: ['unknown-nature-code'] },
])

t.test('principle 10: a dispatcher override wins, and is recorded as such', async (t) => {
  const noise = ruleSet.decide(facts({ natureCode: 'NOISE', override: 'cru' }))
  t.equal(noise.route, 'cru')
  t.same(roles(noise), ['cru:primary'])
  t.equal(noise.ruleId, 'dispatcher-override')
  t.same(noise.override, { route: 'cru', overriddenRuleId: 'default-police' })
  t.equal(noise.followUp, null)
  t.match(noise.explanation, /dispatcher/)
  t.match(noise.explanation, /principle 10/)
  t.match(noise.explanation, /human decision/)

  const edp = ruleSet.decide(facts({ natureCode: 'EDP', flags: { weapons: true }, override: 'cru' }))
  t.equal(edp.route, 'cru', 'a human may send even a weapons call to CRU')
  t.same(edp.override, { route: 'cru', overriddenRuleId: 'safety-mental-health-co-response' })
  t.same(edp.followUp, { queue: 'follow_up', dueWithinHours: 72 }, 'the follow-up of the matched rule is kept')
  t.equal(edp.trace.at(-1)?.ruleId, 'safety-mental-health-co-response', 'the table was still evaluated')
  t.equal(edp.trace.at(-1)?.matched, true)

  const caseManager = ruleSet.decide(facts({ natureCode: 'NOISE', override: 'case_manager' }))
  t.same(roles(caseManager), ['case_management:primary', 'cru:support'])

  const closed = ruleSet.decide(facts({ natureCode: 'EDP', cru: false, override: 'co_response' }))
  t.equal(closed.route, 'co_response')
  t.equal(closed.fallback, null, 'no fallback: the dispatcher chose the route')
  t.same(closed.override, { route: 'co_response', overriddenRuleId: 'mental-health-cru' })

  const unknown = ruleSet.decide(facts({ natureCode: 'ZZ-WHAT', override: 'ems' }))
  t.same(unknown.review, ['unknown-nature-code'], 'an unknown code still needs review')
  t.same(roles(unknown), ['ems:primary'])

  const same = ruleSet.decide(facts({ natureCode: 'NOISE', override: 'police' }))
  t.equal(same.ruleId, 'dispatcher-override', 'an override that agrees with the rules is still recorded')
})
