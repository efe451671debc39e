/**
 * The routing engine: compiles a rule-set document once into closures, then decides calls first-hit
 * with an explanation trace. Pure — no I/O, no clock, no randomness: the same facts always give a
 * deep-equal decision, which is what makes stored decisions replayable.
 *
 * Speed comes from doing the work at compile time: code lists become Sets, refs are inlined as
 * closures, condition labels and the trace entries they can produce are built once and shared
 * (frozen), and explanations are precomputed strings.
 */
import { agencyTimeZone, compileWindow, describeDays, inWindow, localTime } from './availability.js'
import { parseRuleSet, RuleSetError, type Condition, type RuleSet } from './rule-set.js'

const DAY_LABELS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const
import {
  DEFAULT_FREQUENT_CALLER_MIN_CALLS,
  HISTORY_FACTS,
  MENTAL_HEALTH_NATURE_CODES,
  OVERRIDE_RULE_ID,
  PRINCIPLES,
  ROUTES,
  UNKNOWN_NATURE_CODE_REVIEW,
  type AssignmentSpec,
  type BooleanFact,
  type CompiledRuleSet,
  type ConditionTrace,
  type Flags,
  type NumericFact,
  type Route,
  type RoutingDecision,
  type RoutingFacts,
  type RuleTrace,
} from './types.js'

export { RuleSetError }

/** What conditions see: the facts plus what the engine derives from them once per call. */
interface Ctx {
  facts: RoutingFacts
  flags: Flags
  code: string // nature code after the agency map
  unknown: boolean
  mentalHealth: boolean
  frequent: boolean
  gen: number // this decision's stamp in the ref memo (see ConditionCompiler.ref)
  local: { day: number; minute: number } | null // the agency's local time, read once when a time condition asks
}

type Test = (ctx: Ctx) => boolean
type Traced = (ctx: Ctx) => ConditionTrace

interface CompiledAction {
  route: Route
  assignments: AssignmentSpec[]
  followUp: RoutingDecision['followUp']
  followUpWhen: Test | null
  fallbackWhen: Test | null
  fallbackRoute: Route
  fallbackAssignments: AssignmentSpec[]
  fallbackReason: readonly [string, string] | string // [before, after] {cruReason}, or a fixed reason
}

interface CompiledRule {
  id: string
  conditions: Traced[]
  /**
   * When every top-level condition shows its own truth as its value (flags, boolean facts, refs,
   * composites), the whole rule trace is fixed by where evaluation stopped: `tests` with
   * `failedAt[i]` (stopped at i) and `matchedTrace` are built once and shared.
   */
  tests: Test[] | null
  failedAt: RuleTrace[]
  matchedTrace: RuleTrace | null
  action: CompiledAction
  explanation: string
  review: string[]
  reviewUnknown: string[]
}

const ROUTE_LABELS: Readonly<Record<Route, string>> = {
  police: 'police',
  cru: 'the Crisis Response Unit (CRU)',
  co_response: 'a police and CRU co-response',
  ems: 'EMS',
  case_manager: "the subject's county case manager",
}

const CRU_REASON = '{cruReason}'
const NO_CRU_REASON = 'CRU reported unavailable'
const TRACE_CACHE_LIMIT = 1024 // agencies and codes are a bounded vocabulary; don't grow without end

const freezeDeep = <T>(value: T): T => {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) freezeDeep(v)
    Object.freeze(value)
  }
  return value
}

const sentence = (s: string): string => (/[.!?]$/.test(s.trim()) ? s.trim() : `${s.trim()}.`)

const trace = (condition: string, value: unknown, result: boolean): ConditionTrace => Object.freeze({ condition, value, result })

/** Two shared trace entries for a condition whose value is its result (flags, boolean facts, composites). */
const booleanTraced = (label: string, test: Test): Traced => {
  const yes = trace(label, true, true)
  const no = trace(label, false, false)
  return (ctx) => (test(ctx) ? yes : no)
}

/** Trace entries for a condition over a string value, shared per value seen (up to a limit). */
const stringTraced = (label: string, value: (ctx: Ctx) => string, test: (v: string) => boolean): Traced => {
  const cache = new Map<string, ConditionTrace>()
  return (ctx) => {
    const v = value(ctx)
    let t = cache.get(v)
    if (t === undefined) {
      t = trace(label, v, test(v))
      if (cache.size < TRACE_CACHE_LIMIT) cache.set(v, t)
    }
    return t
  }
}

const list = (xs: readonly string[]): string => `[${xs.join(', ')}]`

function numericTest(fact: NumericFact, gte: number | undefined, lte: number | undefined): { label: string; read: (ctx: Ctx) => number; test: (n: number) => boolean } {
  const read: (ctx: Ctx) => number =
    fact === 'priority'
      ? (ctx) => ctx.facts.priority
      : fact === 'priorCallsForSubject30d'
        ? (ctx) => ctx.facts.history.priorCallsForSubject30d
        : (ctx) => ctx.facts.history.priorCallsAtAddress30d
  const lo = gte ?? -Infinity
  const hi = lte ?? Infinity
  const bounds = [gte !== undefined ? `>= ${gte}` : '', lte !== undefined ? `<= ${lte}` : ''].filter(Boolean).join(' and ')
  return { label: `fact ${fact} ${bounds}`, read, test: (n) => n >= lo && n <= hi }
}

function booleanFact(fact: BooleanFact): Test {
  switch (fact) {
    case 'mentalHealthIndicator':
      return (ctx) => ctx.mentalHealth
    case 'cruAvailable':
      return (ctx) => ctx.facts.cru.available
    case 'unknownNatureCode':
      return (ctx) => ctx.unknown
    case 'caseManagerActive':
      return (ctx) => ctx.facts.history.caseManagerActive
    case 'frequentCaller':
      return (ctx) => ctx.frequent
  }
}

/** Compiles conditions of one rule set; refs are compiled once and shared. */
class ConditionCompiler {
  private readonly refs = new Map<string, Test>()
  // Refs such as "safety" appear in several rules; each is evaluated at most once per decision.
  // The memo is scratch space stamped with the decision's generation, invisible from outside.
  private readonly memoGen: number[] = []
  private readonly memoValue: boolean[] = []
  constructor(
    private readonly definitions: Readonly<Record<string, Condition>>,
    private readonly frequentMinCalls: number,
    private readonly zoneOf: (agency: string) => string,
  ) {}

  /** The agency's local weekday and minute at the decision's instant (`at` is a fact, not a clock read). */
  private local(ctx: Ctx): { day: number; minute: number } {
    return (ctx.local ??= localTime(new Date(ctx.facts.at), this.zoneOf(ctx.facts.agency)))
  }

  label(c: Condition): string {
    if ('all' in c) return c.all.length === 0 ? 'always' : `all of (${c.all.map((s) => this.label(s)).join(', ')})`
    if ('any' in c) return `any of (${c.any.map((s) => this.label(s)).join(', ')})`
    if ('not' in c) return `not ${this.label(c.not)}`
    if ('ref' in c) return c.ref
    if ('flag' in c) return `flag ${c.flag}`
    if ('natureCode' in c) return `natureCode in ${list(c.natureCode)}`
    if ('agency' in c) return `agency in ${list(c.agency)}`
    if ('eventType' in c) return `eventType in ${list(c.eventType)}`
    if ('time' in c) return `time ${c.time.days ? `${describeDays(c.time.days)} ` : ''}${c.time.from}–${c.time.to}`
    if ('gte' in c || 'lte' in c) return numericTest(c.fact as NumericFact, 'gte' in c ? c.gte : undefined, 'lte' in c ? c.lte : undefined).label
    if (c.fact === 'frequentCaller') return `fact frequentCaller (>= ${this.frequentMinCalls} calls for the subject in 30 days)`
    return `fact ${c.fact}`
  }

  test(c: Condition): Test {
    if ('all' in c) {
      const parts = c.all.map((s) => this.test(s))
      if (parts.length === 0) return () => true
      if (parts.length === 1) return parts[0]!
      if (parts.length === 2) {
        const [a, b] = parts as [Test, Test]
        return (ctx) => a(ctx) && b(ctx)
      }
      return (ctx) => {
        for (let i = 0; i < parts.length; i++) if (!parts[i]!(ctx)) return false
        return true
      }
    }
    if ('any' in c) {
      const parts = c.any.map((s) => this.test(s))
      if (parts.length === 1) return parts[0]!
      return (ctx) => {
        for (let i = 0; i < parts.length; i++) if (parts[i]!(ctx)) return true
        return false
      }
    }
    if ('not' in c) {
      const inner = this.test(c.not)
      return (ctx) => !inner(ctx)
    }
    if ('ref' in c) return this.ref(c.ref)
    if ('flag' in c) {
      const flag = c.flag
      return (ctx) => ctx.flags[flag] === true
    }
    if ('natureCode' in c) {
      const codes = new Set(c.natureCode)
      return (ctx) => codes.has(ctx.code)
    }
    if ('agency' in c) {
      const agencies = new Set(c.agency)
      return (ctx) => agencies.has(ctx.facts.agency)
    }
    if ('eventType' in c) {
      const types = new Set<string>(c.eventType)
      return (ctx) => types.has(ctx.facts.eventType)
    }
    if ('time' in c) {
      const w = compileWindow(c.time)
      return (ctx) => {
        const { day, minute } = this.local(ctx)
        return inWindow(w, day, minute)
      }
    }
    if ('gte' in c || 'lte' in c) {
      const { read, test } = numericTest(c.fact as NumericFact, 'gte' in c ? c.gte : undefined, 'lte' in c ? c.lte : undefined)
      return (ctx) => test(read(ctx))
    }
    return booleanFact(c.fact as BooleanFact)
  }

  /** A top-level condition of a rule: evaluated and recorded in the trace. */
  /** Whether the traced value of a top-level condition is just its truth. */
  static booleanValued(c: Condition): boolean {
    return !('natureCode' in c || 'agency' in c || 'eventType' in c || 'time' in c || 'gte' in c || 'lte' in c || ('fact' in c && c.fact === 'frequentCaller'))
  }

  traced(c: Condition): Traced {
    const label = this.label(c)
    if ('natureCode' in c) {
      const codes = new Set(c.natureCode)
      return stringTraced(label, (ctx) => ctx.code, (v) => codes.has(v))
    }
    if ('agency' in c) {
      const agencies = new Set(c.agency)
      return stringTraced(label, (ctx) => ctx.facts.agency, (v) => agencies.has(v))
    }
    if ('eventType' in c) {
      const types = new Set<string>(c.eventType)
      return stringTraced(label, (ctx) => ctx.facts.eventType, (v) => types.has(v))
    }
    if ('time' in c) {
      // The value shown is the local time the window was tested against, e.g. "Tue 13:05".
      const w = compileWindow(c.time)
      return stringTraced(
        label,
        (ctx) => {
          const { day, minute } = this.local(ctx)
          return `${DAY_LABELS[day]} ${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`
        },
        (v) => inWindow(w, DAY_LABELS.indexOf(v.slice(0, 3) as (typeof DAY_LABELS)[number]), Number(v.slice(4, 6)) * 60 + Number(v.slice(7, 9))),
      )
    }
    if ('gte' in c || 'lte' in c) {
      const { read, test } = numericTest(c.fact as NumericFact, 'gte' in c ? c.gte : undefined, 'lte' in c ? c.lte : undefined)
      const small: ConditionTrace[] = [] // counts and priorities are small integers: share their entries
      return (ctx) => {
        const n = read(ctx)
        if (Number.isInteger(n) && n >= 0 && n < 128) return (small[n] ??= trace(label, n, test(n)))
        return trace(label, n, test(n))
      }
    }
    if ('fact' in c && c.fact === 'frequentCaller') {
      // The trace shows the count the threshold was compared with: calls in 30 days, this one included.
      const small: ConditionTrace[] = []
      return (ctx) => {
        const n = ctx.facts.history.priorCallsForSubject30d + 1
        if (Number.isInteger(n) && n >= 0 && n < 128) return (small[n] ??= trace(label, n, ctx.frequent))
        return trace(label, n, ctx.frequent)
      }
    }
    // Flags, boolean facts, refs and composites: the value shown is the truth of the condition.
    return booleanTraced(label, this.test(c))
  }

  private ref(name: string): Test {
    const hit = this.refs.get(name)
    if (hit) return hit
    const c = this.definitions[name]
    if (!c) throw new RuleSetError([`ref ${name} is not a definition`])
    const inner = this.test(c) // the schema rules out cycles, so this terminates
    const slot = this.memoGen.length
    const memoGen = this.memoGen
    const memoValue = this.memoValue
    memoGen.push(-1)
    memoValue.push(false)
    const test: Test = (ctx) => {
      if (memoGen[slot] === ctx.gen) return memoValue[slot]!
      const v = inner(ctx)
      memoGen[slot] = ctx.gen
      memoValue[slot] = v
      return v
    }
    this.refs.set(name, test)
    return test
  }
}

function compileFallbackReason(reason: string): CompiledAction['fallbackReason'] {
  const at = reason.indexOf(CRU_REASON)
  if (at < 0) return reason
  return [reason.slice(0, at), reason.slice(at + CRU_REASON.length)] as const
}

/**
 * The labels of the rules' top-level conditions that depend on a history fact, directly or through
 * definitions. Decided from what a condition tests, never from its label, since a definition may be
 * named anything.
 */
function historyConditionLabels(document: RuleSet, compiler: ConditionCompiler): ReadonlySet<string> {
  const definitions = document.definitions ?? {}
  const usesHistory = (c: Condition): boolean => {
    if ('all' in c) return c.all.some(usesHistory)
    if ('any' in c) return c.any.some(usesHistory)
    if ('not' in c) return usesHistory(c.not)
    if ('ref' in c) return definitions[c.ref] !== undefined && usesHistory(definitions[c.ref]!) // the schema rules out cycles
    return 'fact' in c && HISTORY_FACTS.has(c.fact)
  }
  const labels = new Set<string>()
  for (const rule of document.rules) {
    for (const c of 'all' in rule.when ? rule.when.all : [rule.when]) if (usesHistory(c)) labels.add(compiler.label(c))
  }
  return labels
}

/** Compile a rule-set document; throws RuleSetError when it fails validation. */
export function compileRuleSet(doc: RuleSet): CompiledRuleSet {
  // Validate even typed input: stored documents arrive as JSON and are cast, not checked.
  const document = freezeDeep(parseRuleSet(doc))
  const frequentMinCalls = document.frequentCaller?.minCalls ?? DEFAULT_FREQUENT_CALLER_MIN_CALLS
  const compiler = new ConditionCompiler(document.definitions ?? {}, frequentMinCalls, (agency) => agencyTimeZone(document, agency))
  const known = new Set(document.natureCodes)
  const maps = new Map<string, Map<string, string>>(
    Object.entries(document.natureCodeMaps ?? {}).map(([agency, map]) => [agency, new Map(Object.entries(map))]),
  )
  const routeAssignments = Object.fromEntries(ROUTES.map((r) => [r, document.routes[r]])) as Record<Route, AssignmentSpec[]>

  const rules: CompiledRule[] = document.rules.map((rule) => {
    const { action } = rule
    const when = rule.when
    const top = 'all' in when ? when.all : [when]
    const review = [...new Set(action.review ?? [])]
    const fb = action.fallback
    const conditions = top.map((c) => compiler.traced(c))
    const fixed = top.every((c) => ConditionCompiler.booleanValued(c))
    const labels = top.map((c) => compiler.label(c))
    const passed = labels.map((l) => Object.freeze({ condition: l, value: true, result: true }))
    const failedAt = labels.map((l, i) =>
      freezeDeep({ ruleId: rule.id, matched: false, conditions: [...passed.slice(0, i), { condition: l, value: false, result: false }] }),
    )
    return {
      id: rule.id,
      conditions,
      tests: fixed ? top.map((c) => compiler.test(c)) : null,
      failedAt,
      matchedTrace: fixed ? freezeDeep({ ruleId: rule.id, matched: true, conditions: passed }) : null,
      explanation: `Principle ${rule.principle} (${PRINCIPLES[rule.principle]}): ${sentence(rule.description)}`,
      review: freezeDeep(review),
      reviewUnknown: freezeDeep(review.includes(UNKNOWN_NATURE_CODE_REVIEW) ? review : [...review, UNKNOWN_NATURE_CODE_REVIEW]),
      action: {
        route: action.route,
        assignments: action.assignments ?? routeAssignments[action.route],
        followUp: action.followUp ? freezeDeep({ queue: 'follow_up', dueWithinHours: action.followUp.dueWithinHours }) : null,
        followUpWhen: action.followUp?.when ? compiler.test(action.followUp.when) : null,
        fallbackWhen: fb ? compiler.test(fb.when) : null,
        fallbackRoute: fb ? fb.route : action.route,
        fallbackAssignments: fb ? (fb.assignments ?? routeAssignments[fb.route]) : [],
        fallbackReason: fb ? compileFallbackReason(fb.reason) : '',
      },
    }
  })
  const noMap = new Map<string, string>()
  let generation = 0

  function natureCodeOf(agency: string, natureCode: string) {
    const code = (maps.get(agency) ?? noMap).get(natureCode) ?? natureCode
    return { code, known: known.has(code) }
  }

  function decide(facts: RoutingFacts): RoutingDecision {
    const { code, known: isKnown } = natureCodeOf(facts.agency, facts.natureCode)
    const flags = facts.flags
    const ctx: Ctx = {
      facts,
      flags,
      code,
      unknown: !isKnown,
      mentalHealth: flags.mentalHealth === true || flags.suicidalIdeation === true || MENTAL_HEALTH_NATURE_CODES.has(code),
      frequent: facts.history.priorCallsForSubject30d + 1 >= frequentMinCalls,
      gen: ++generation,
      local: null,
    }
    const trace: RuleTrace[] = []
    rules: for (let r = 0; r < rules.length; r++) {
      const rule = rules[r]!
      const tests = rule.tests
      if (tests !== null) {
        for (let i = 0; i < tests.length; i++) {
          if (!tests[i]!(ctx)) {
            trace.push(rule.failedAt[i]!)
            continue rules
          }
        }
        trace.push(rule.matchedTrace!)
        return outcome(rule, ctx, trace)
      }
      const conditions: ConditionTrace[] = []
      let matched = true
      for (let i = 0; i < rule.conditions.length; i++) {
        const t = rule.conditions[i]!(ctx)
        conditions.push(t)
        if (!t.result) {
          matched = false
          break
        }
      }
      trace.push({ ruleId: rule.id, matched, conditions })
      if (matched) return outcome(rule, ctx, trace)
    }
    // Unreachable for a validated rule set: its last rule has no conditions.
    throw new RuleSetError(['no rule matched: the rule set has no default rule'])
  }

  function outcome(rule: CompiledRule, ctx: Ctx, trace: RuleTrace[]): RoutingDecision {
    const { action } = rule
    const { facts } = ctx
    const followUp = action.followUp !== null && (action.followUpWhen === null || action.followUpWhen(ctx)) ? action.followUp : null
    const derived = { natureCode: ctx.code, unknownNatureCode: ctx.unknown, mentalHealthIndicator: ctx.mentalHealth, frequentCaller: ctx.frequent }
    const review = ctx.unknown ? rule.reviewUnknown : rule.review
    const fellBack = action.fallbackWhen !== null && action.fallbackWhen(ctx)
    let route = action.route
    let assignments = action.assignments
    let fallback: RoutingDecision['fallback'] = null
    let explanation = rule.explanation
    if (fellBack) {
      const r = action.fallbackReason
      const reason = typeof r === 'string' ? r : r[0] + (facts.cru.reason ?? NO_CRU_REASON) + r[1]
      route = action.fallbackRoute
      assignments = action.fallbackAssignments
      fallback = { fromRoute: action.route, reason }
      explanation = `${explanation} Principle 7 (CRU fallback): ${sentence(reason)}`
    }

    if (facts.dispatcherOverride !== null) {
      const chosen = facts.dispatcherOverride
      const overridden = routeAssignments[chosen]
      if (overridden === undefined) throw new TypeError(`dispatcherOverride ${String(chosen)} is not a route`)
      return {
        route: chosen,
        assignments: overridden,
        ruleSetVersion: document.version,
        ruleId: OVERRIDE_RULE_ID,
        explanation:
          `A dispatcher routed this call to ${ROUTE_LABELS[chosen]} — a human decision, which wins over every rule ` +
          `(principle 10: dispatcher override). The rules would have sent it to ${ROUTE_LABELS[route]} (rule ${rule.id}).`,
        followUp,
        fallback: null,
        override: { route: chosen, overriddenRuleId: rule.id },
        review,
        derived,
        trace,
      }
    }

    return {
      route,
      assignments,
      ruleSetVersion: document.version,
      ruleId: rule.id,
      explanation,
      followUp,
      fallback,
      override: null,
      review,
      derived,
      trace,
    }
  }

  return { version: document.version, name: document.name, document, decide, historyLabels: historyConditionLabels(document, compiler), natureCodeOf }
}
