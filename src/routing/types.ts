/**
 * The routing engine's contract: the facts a decision may depend on and the decision it returns.
 * The rest of the service (ingestion, queues, consoles) codes against these names and shapes.
 */
import type { RuleSet } from './rule-set.js'

export const ROUTES = ['police', 'cru', 'co_response', 'ems', 'case_manager'] as const
export type Route = (typeof ROUTES)[number]

export const QUEUES = ['police', 'cru', 'ems', 'case_management', 'follow_up'] as const
export type QueueName = (typeof QUEUES)[number]

export const ROLES = ['primary', 'support'] as const
export type Role = (typeof ROLES)[number]

export const FLAG_NAMES = [
  'weapons',
  'violence',
  'threatToOthers',
  'crimeInProgress',
  'medicalEmergency',
  'injury',
  'mentalHealth',
  'suicidalIdeation',
  'meansAtHand',
  'substanceUse',
  'coResponseRequested',
] as const
export type FlagName = (typeof FLAG_NAMES)[number]
export type Flags = Record<FlagName, boolean>

/**
 * What an agency id looks like on the wire (call.agency): a rule set's agency ids are compared with
 * it exactly, so one that cannot match it (`Hastings-PD`) would silently never apply.
 */
export const AGENCY_ID_PATTERN = /^[a-z0-9][a-z0-9._-]*$/
export const AGENCY_ID_MAX_LENGTH = 64
export const isAgencyId = (agency: string): boolean => agency.length <= AGENCY_ID_MAX_LENGTH && AGENCY_ID_PATTERN.test(agency)

export const EVENT_TYPES = ['call.created', 'call.updated', 'call.closed'] as const
export type EventType = (typeof EVENT_TYPES)[number]

/** Boolean facts a rule may test with `{ "fact": name }`; derived from the facts by the engine. */
export const BOOLEAN_FACTS = ['mentalHealthIndicator', 'cruAvailable', 'unknownNatureCode', 'caseManagerActive', 'frequentCaller'] as const
export type BooleanFact = (typeof BOOLEAN_FACTS)[number]

/**
 * `frequentCaller` holds when the subject has at least this many calls in 30 days, this one included
 * (priorCallsForSubject30d + 1 >= minCalls), unless the rule set sets its own `frequentCaller.minCalls`.
 * Derived by the engine from the stored count, so replaying a rule set with another threshold works.
 */
export const DEFAULT_FREQUENT_CALLER_MIN_CALLS = 3

/** Numeric facts a rule may compare with `{ "fact": name, "gte": n, "lte": n }`. */
export const NUMERIC_FACTS = ['priority', 'priorCallsForSubject30d', 'priorCallsAtAddress30d'] as const
export type NumericFact = (typeof NUMERIC_FACTS)[number]

/** The facts drawn from the subject's and the address's history: behavioral-health data. */
export const HISTORY_FACTS: ReadonlySet<string> = new Set<BooleanFact | NumericFact>(['priorCallsForSubject30d', 'priorCallsAtAddress30d', 'caseManagerActive', 'frequentCaller'])

/**
 * DESIGN.md: a mental-health indicator is flags.mentalHealth, flags.suicidalIdeation, or one of these
 * nature codes (after the agency map). Part of the contract, not of a rule set, so every rule set
 * and the follow-up policy agree on what a mental-health call is.
 */
export const MENTAL_HEALTH_NATURE_CODES: ReadonlySet<string> = new Set(['EDP', 'SUICTHRT', 'SUICIDE'])

/**
 * Nature codes that by themselves are a safety or a medical matter (DESIGN rules 1 and 2), whatever a
 * rule set says: verification proves every rule set sends them to police as primary, and to EMS.
 */
export const SAFETY_NATURE_CODES: ReadonlySet<string> = new Set(['WEAPON', 'SHOOT', 'STABBING', 'ASSAULT', 'FIGHT', 'DVA', 'ROBBERY', 'THREATS', 'HOMICIDE', 'HOSTAGE', 'CARJACK', 'ABDUCTF', 'ABDUCTNF'])
/**
 * Those of SAFETY_NATURE_CODES added after rule sets were first stored (2026-12-05, the abductions):
 * a stored version is proved without them, so a rollback to one is never refused for them.
 */
export const LATER_SAFETY_NATURE_CODES: ReadonlySet<string> = new Set(['ABDUCTF', 'ABDUCTNF'])
export const MEDICAL_NATURE_CODES: ReadonlySet<string> = new Set(['OD', 'CARDIAC', 'PERUNCON', 'SICK', 'MVAINJY', 'STROKE', 'SEIZURE', 'RESPARR', 'CHOKE', 'BLEEDING'])

/** The codes whose meaning is part of the contract: no agency's map may turn them into another code. */
export const CONTRACT_NATURE_CODES: ReadonlySet<string> = new Set([...MENTAL_HEALTH_NATURE_CODES, ...SAFETY_NATURE_CODES, ...MEDICAL_NATURE_CODES])

/** The ten routing principles of DESIGN.md, as named in explanations. */
export const PRINCIPLES: Readonly<Record<number, string>> = {
  1: 'safety first',
  2: 'medical emergencies get EMS',
  3: 'mental-health calls go to CRU',
  4: 'suicidal with means at hand',
  5: 'co-response requested',
  6: 'repeat caller with a case manager',
  7: 'CRU fallback',
  8: 'mental-health follow-up',
  9: 'everything else goes to police',
  10: 'dispatcher override',
}

/** Everything a decision may depend on. Stored with the decision so it can be replayed. */
export interface RoutingFacts {
  eventType: EventType
  agency: string
  natureCode: string // as CAD sent it (agency code or APCO code)
  priority: number // 1..5
  flags: Flags // all eleven present
  dispatcherOverride: Route | null
  at: string // ISO 8601 instant of the decision (the clock, as a fact)
  cru: {
    available: boolean
    reason: string | null
    /**
     * Set when CRU is available only because the call already has an open CRU assignment: why CRU
     * would take no new call now (outside its hours, at capacity). DESIGN rule 7 is about new calls.
     */
    unavailableForNewCalls?: string
  }
  history: {
    priorCallsForSubject30d: number // other calls for the same subject personId in the last 30 days
    priorCallsAtAddress30d: number
    caseManagerActive: boolean // the subject has an active county case-manager link
    /**
     * That link's case manager, present only when caseManagerActive: whom a case-management
     * assignment is for (DESIGN rule 6). Not a routing fact: no condition reads it, so the engine
     * decides the same with or without it; it is stored with the facts so that the decision shows,
     * and keeps showing after the link changes, whom it routed to.
     */
    caseManager?: string
  }
}

export interface AssignmentSpec {
  queue: QueueName
  role: Role
}

/** A condition rendered readably, e.g. "flag weapons", "natureCode in [EDP, SUICTHRT]", "fact cruAvailable". */
export interface ConditionTrace {
  condition: string
  value: unknown
  result: boolean
}

export interface RuleTrace {
  ruleId: string
  matched: boolean
  conditions: ConditionTrace[]
}

export interface RoutingDecision {
  route: Route
  assignments: AssignmentSpec[] // exactly one primary; never contains follow_up
  ruleSetVersion: number
  ruleId: string // the rule that fired ("dispatcher-override" when an override won)
  explanation: string // one or two plain-English sentences a dispatcher can read, naming the principle
  followUp: { queue: 'follow_up'; dueWithinHours: number } | null // policy to apply when the call closes (DESIGN rule 8)
  fallback: { fromRoute: Route; reason: string } | null // DESIGN rule 7 (and rule 1 when CRU is unavailable)
  override: { route: Route; overriddenRuleId: string } | null // DESIGN rule 10
  review: string[] // e.g. ['unknown-nature-code']
  derived: { natureCode: string; unknownNatureCode: boolean; mentalHealthIndicator: boolean; frequentCaller: boolean }
  trace: RuleTrace[] // each rule considered in order, up to and including the one that fired
}

export interface CompiledRuleSet {
  version: number
  name: string
  document: RuleSet
  decide(facts: RoutingFacts): RoutingDecision
  /**
   * The trace labels of top-level conditions that depend on a history fact, directly or through
   * definitions: behavioral-health data, which police and EMS consoles do not see.
   */
  historyLabels: ReadonlySet<string>
  /**
   * The nature code a decision routes on: the agency's own code through the rule set's map for that
   * agency (an APCO code stays itself), and whether the rule set lists it (if not, it is unknown).
   */
  natureCodeOf(agency: string, natureCode: string): { code: string; known: boolean }
}

/** The rule id a decision carries when a dispatcher override won (DESIGN rule 10). */
export const OVERRIDE_RULE_ID = 'dispatcher-override'

/** The review tag every decision on an unmapped nature code carries (DESIGN rule 9). */
export const UNKNOWN_NATURE_CODE_REVIEW = 'unknown-nature-code'
