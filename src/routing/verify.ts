/**
 * Verification of a rule set before it is stored or activated. Pure: a document in, a report out.
 *
 * Beyond the schema, the safety invariants are proven, not sampled: every fact a rule can test has
 * finitely many values that make a difference (nature codes grouped by the conditions that mention
 * them, agencies by the agency conditions and maps, counts by the thresholds compared against,
 * each flag and boolean fact), so the whole fact space is enumerated and every class is decided by
 * the compiled engine itself — the same closures that route live calls.
 */
import { agencyTimeZone, compileWindow, inWindow, localTime } from './availability.js'
import { compileRuleSet } from './engine.js'
import { flattenIssues, newDocumentIssues, renderPath, ruleSetSchema, subConditions, type Condition, type RuleSet, type TimeWindow } from './rule-set.js'
import {
  BOOLEAN_FACTS,
  DEFAULT_FREQUENT_CALLER_MIN_CALLS,
  EVENT_TYPES,
  FLAG_NAMES,
  MEDICAL_NATURE_CODES,
  MENTAL_HEALTH_NATURE_CODES,
  LATER_SAFETY_NATURE_CODES,
  NUMERIC_FACTS,
  SAFETY_NATURE_CODES,
  ROUTES,
  type BooleanFact,
  type EventType,
  type FlagName,
  type NumericFact,
  type Route,
  type RoutingDecision,
  type RoutingFacts,
} from './types.js'

export const FINDING_KINDS = [
  'schema',
  'unknown-queue',
  'unknown-route',
  'duplicate-rule-id',
  'no-default-rule',
  'shadowed-rule',
  'unsatisfiable-rule',
  'police-invariant',
  'ems-invariant',
  'one-primary-invariant',
  'cru-availability-invariant',
  'fact-space-too-large',
] as const
export type FindingKind = (typeof FINDING_KINDS)[number]

export interface Finding {
  kind: FindingKind
  /** Plain English, one finding per line of the report. */
  message: string
  /** Where in the document, e.g. rules[3].action.route. */
  path?: string
  ruleId?: string
  /** Calls (fact classes) that show the problem, rendered readably. */
  examples?: string[]
}

export interface CoverageRule {
  ruleId: string
  /** true: the rule's CRU fallback gave this route (DESIGN rule 7). */
  fallback: boolean
  factClasses: number
  natureCodes: string[]
  /** Nature codes the rule set does not list reach it too (they are marked for review). */
  unlistedNatureCodes: boolean
  /** Flags set in every combination that reaches it, and flags set in none. */
  flagsAlways: FlagName[]
  flagsNever: FlagName[]
  flagCombinations: number
}

export interface RouteCoverage {
  route: Route
  factClasses: number
  natureCodes: string[]
  rules: CoverageRule[]
}

export interface VerificationReport {
  ok: boolean
  version: number | null
  findings: Finding[]
  /** Per route: what reaches it. Empty when the document does not parse. */
  coverage: RouteCoverage[]
  factSpace: { classes: number; natureCodeClasses: number; agencyClasses: number; flags: FlagName[] } | null
}

/**
 * What the invariants mean, independent of any rule set (a rule set cannot define its way out):
 * flags, and nature codes that by themselves are a safety or medical matter (DESIGN rules 1 and 2;
 * SAFETY_NATURE_CODES and MEDICAL_NATURE_CODES, in types.ts, since a rule set's maps may not touch them).
 */
export const SAFETY_FLAGS: readonly FlagName[] = ['weapons', 'violence', 'threatToOthers', 'crimeInProgress']
export const MEDICAL_FLAGS: readonly FlagName[] = ['medicalEmergency', 'injury']

/** Above this many classes verification refuses rather than runs for minutes. */
export const MAX_FACT_CLASSES = 3_000_000
const MAX_EXAMPLES = 5

/** Decisions between two pauses of the asynchronous verification. */
const YIELD_EVERY = 4096

/** Verify a rule-set document (anything: it may not even parse). */
export function verifyRuleSet(input: unknown): VerificationReport {
  const steps = verification(input)
  for (;;) {
    const step = steps.next()
    if (step.done) return step.value
  }
}

/**
 * The same, in slices: the proof takes up to a second of CPU, and an API process must keep routing
 * calls meanwhile.
 */
export async function verifyRuleSetAsync(input: unknown, opts: VerifyOptions = {}): Promise<VerificationReport> {
  const steps = verification(input, opts)
  for (;;) {
    const step = steps.next()
    if (step.done) return step.value
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/**
 * `asStored`: without the checks added after rule sets were first stored (newDocumentIssues, and the
 * safety codes of LATER_SAFETY_NATURE_CODES), for a rollback to a stored version: the emergency path
 * is not blocked by what escalation ignores or judges for itself anyway.
 */
export interface VerifyOptions {
  asStored?: boolean
}

function* verification(input: unknown, opts: VerifyOptions = {}): Generator<undefined, VerificationReport> {
  const parsed = ruleSetSchema.safeParse(input)
  const version = typeof (input as { version?: unknown })?.version === 'number' ? (input as { version: number }).version : null
  if (!parsed.success) {
    const findings = flattenIssues(parsed.error.issues).map(({ path, issue }): Finding => {
      const p = renderPath(path)
      return { kind: classify(issue, path), message: `${p}: ${issue.message}`, path: p }
    })
    return { ok: false, version, findings, coverage: [], factSpace: null }
  }
  const report = yield* verifyParsed(parsed.data, opts.asStored ? STORED_SAFETY_NATURE_CODES : SAFETY_NATURE_CODES)
  if (opts.asStored) return report
  const added = newDocumentIssues(parsed.data).map(({ message, path }): Finding => ({ kind: 'schema', message: `${renderPath(path)}: ${message}`, path: renderPath(path) }))
  return added.length ? { ...report, ok: false, findings: [...added, ...report.findings] } : report
}

function classify(issue: { code: string; params?: unknown }, path: readonly PropertyKey[]): FindingKind {
  const kind = (issue.params as { kind?: string } | undefined)?.kind
  if (kind && (FINDING_KINDS as readonly string[]).includes(kind)) return kind as FindingKind
  const last = path.at(-1)
  if (issue.code === 'invalid_value' && last === 'queue') return 'unknown-queue'
  if (issue.code === 'invalid_value' && last === 'route') return 'unknown-route'
  if (issue.code === 'unrecognized_keys' && path.length === 1 && path[0] === 'routes') return 'unknown-route'
  return 'schema'
}

// ——— The vocabulary a rule set's conditions use ———

interface Vocabulary {
  codeSets: string[][]
  agencySets: string[][]
  flags: Set<FlagName>
  eventTypes: boolean
  numbers: Map<NumericFact, Set<number>> // boundary values where a comparison changes its answer
  booleans: Set<BooleanFact>
  times: TimeWindow[]
}

function vocabulary(doc: RuleSet): Vocabulary {
  const v: Vocabulary = { codeSets: [], agencySets: [], flags: new Set(), eventTypes: false, numbers: new Map(), booleans: new Set(), times: [] }
  const seenTimes = new Set<string>()
  const seenCodes = new Set<string>()
  const seenAgencies = new Set<string>()
  const walk = (c: Condition): void => {
    if ('natureCode' in c) {
      const key = [...new Set(c.natureCode)].sort().join('\u0000')
      if (!seenCodes.has(key)) {
        seenCodes.add(key)
        v.codeSets.push([...new Set(c.natureCode)])
      }
    } else if ('agency' in c) {
      const key = [...new Set(c.agency)].sort().join('\u0000')
      if (!seenAgencies.has(key)) {
        seenAgencies.add(key)
        v.agencySets.push([...new Set(c.agency)])
      }
    } else if ('flag' in c) v.flags.add(c.flag)
    else if ('eventType' in c) v.eventTypes = true
    else if ('time' in c) {
      const key = JSON.stringify(c.time)
      if (!seenTimes.has(key)) {
        seenTimes.add(key)
        v.times.push(c.time)
      }
    }
    else if ('fact' in c) {
      if ('gte' in c || 'lte' in c) {
        const fact = c.fact as NumericFact
        const points = v.numbers.get(fact) ?? new Set<number>()
        // Integer facts: "gte g" changes at ceil(g), "lte l" changes just above floor(l).
        if ('gte' in c && c.gte !== undefined) points.add(Math.ceil(c.gte))
        if ('lte' in c && c.lte !== undefined) points.add(Math.floor(c.lte) + 1)
        v.numbers.set(fact, points)
      } else if (c.fact === 'frequentCaller') {
        // Derived from the subject's prior calls (prior + 1 >= minCalls): enumerate that boundary.
        const points = v.numbers.get('priorCallsForSubject30d') ?? new Set<number>()
        points.add((doc.frequentCaller?.minCalls ?? DEFAULT_FREQUENT_CALLER_MIN_CALLS) - 1)
        v.numbers.set('priorCallsForSubject30d', points)
      } else v.booleans.add(c.fact as BooleanFact)
    }
    for (const s of subConditions(c)) walk(s)
  }
  for (const c of Object.values(doc.definitions ?? {})) walk(c)
  for (const rule of doc.rules) {
    walk(rule.when)
    if (rule.action.followUp?.when) walk(rule.action.followUp.when)
    if (rule.action.fallback) walk(rule.action.fallback.when)
  }
  return v
}

/** A string none of the given sets contain. */
function freshName(base: string, taken: (s: string) => boolean): string {
  let s = base
  for (let i = 2; taken(s); i++) s = `${base}-${i}`
  return s
}

interface CodeClass {
  members: string[] // listed or mentioned codes in the class; empty for the unlisted class
  unlisted: boolean // the class of codes nobody mentions
  sample: string
  safety: boolean
  medical: boolean
}

interface AgencyClass {
  members: string[]
  other: boolean // agencies nobody mentions
  sample: string
  map: ReadonlyMap<string, string>
}

/** The safety codes a stored version is proved against: those named when rule sets were first stored. */
const STORED_SAFETY_NATURE_CODES: ReadonlySet<string> = new Set([...SAFETY_NATURE_CODES].filter((c) => !LATER_SAFETY_NATURE_CODES.has(c)))

function codeClasses(doc: RuleSet, v: Vocabulary, safetyCodes: ReadonlySet<string>): CodeClass[] {
  const maps = Object.values(doc.natureCodeMaps ?? {})
  const universe = new Set<string>([...doc.natureCodes, ...v.codeSets.flat(), ...MENTAL_HEALTH_NATURE_CODES, ...safetyCodes, ...MEDICAL_NATURE_CODES])
  for (const m of maps) for (const to of Object.values(m)) universe.add(to)
  const known = new Set(doc.natureCodes)
  const sets = v.codeSets.map((s) => new Set(s))
  const signature = (code: string) =>
    [known.has(code), MENTAL_HEALTH_NATURE_CODES.has(code), safetyCodes.has(code), MEDICAL_NATURE_CODES.has(code), ...sets.map((s) => s.has(code))].map(Number).join('')
  const classes = new Map<string, CodeClass>()
  for (const code of [...universe].sort()) {
    const sig = signature(code)
    const hit = classes.get(sig)
    if (hit) hit.members.push(code)
    else classes.set(sig, { members: [code], unlisted: false, sample: code, safety: safetyCodes.has(code), medical: MEDICAL_NATURE_CODES.has(code) })
  }
  const isMapKey = (s: string) => maps.some((m) => Object.hasOwn(m, s))
  const unlisted = freshName('ZZ-UNLISTED', (s) => universe.has(s) || isMapKey(s))
  const sig = signature(unlisted)
  const hit = classes.get(sig)
  // Codes outside the universe all share one signature (nothing holds for them); should a mentioned
  // code share it too, the class stands for both (rawCodeFor then tries the fresh name as well).
  if (hit) hit.unlisted = true
  else classes.set(sig, { members: [], unlisted: true, sample: unlisted, safety: false, medical: false })
  return [...classes.values()]
}

function agencyClasses(doc: RuleSet, v: Vocabulary): AgencyClass[] {
  const maps = doc.natureCodeMaps ?? {}
  // Time conditions read the agency's own time zone: then agencies differ by zone too.
  const zones = v.times.length > 0
  const universe = new Set<string>([...v.agencySets.flat(), ...Object.keys(maps), ...(zones ? Object.keys(doc.cru).filter((k) => k !== '*') : [])])
  const sets = v.agencySets.map((s) => new Set(s))
  const signature = (a: string) => `${sets.map((s) => (s.has(a) ? 1 : 0)).join('')}|${Object.hasOwn(maps, a) ? a : ''}|${zones ? agencyTimeZone(doc, a) : ''}`
  const classes = new Map<string, AgencyClass>()
  const mapOf = (a: string) => new Map(Object.entries(Object.hasOwn(maps, a) ? maps[a]! : {}))
  for (const a of [...universe].sort()) {
    const sig = signature(a)
    const hit = classes.get(sig)
    if (hit) hit.members.push(a)
    else classes.set(sig, { members: [a], other: false, sample: a, map: mapOf(a) })
  }
  const other = freshName('other-agency', (s) => universe.has(s))
  const sig = signature(other)
  const hit = classes.get(sig)
  if (hit) hit.other = true
  else classes.set(sig, { members: [], other: true, sample: other, map: new Map() })
  return [...classes.values()]
}

/** A raw nature code that an agency's map turns into a member of the class, or null if none can. */
function rawCodeFor(cls: CodeClass, agency: AgencyClass): string | null {
  const candidates = cls.members.length ? [...cls.members] : [cls.sample]
  for (const c of candidates) if (!agency.map.has(c)) return c
  const members = new Set(candidates)
  for (const [from, to] of agency.map) if (members.has(to)) return from
  return null
}

const countValues = (points: Set<number> | undefined): number[] => [0, ...[...(points ?? [])].filter((n) => n > 0)].sort((a, b) => a - b).filter((n, i, xs) => xs.indexOf(n) === i)

/**
 * Sets a boolean fact a rule may test; false for the derived ones, which are set through what they
 * derive from. A fact added to BOOLEAN_FACTS fails to compile here until it is given a setter, so
 * the proof can never silently ignore it.
 */
const CRU_AVAILABLE = Object.freeze({ available: true, reason: null })
const CRU_UNAVAILABLE = Object.freeze({ available: false, reason: 'CRU unavailable (verification)' })

function setBooleanFact(f: RoutingFacts, fact: BooleanFact, value: boolean): boolean {
  switch (fact) {
    case 'cruAvailable':
      f.cru = value ? CRU_AVAILABLE : CRU_UNAVAILABLE
      return true
    case 'caseManagerActive':
      f.history.caseManagerActive = value
      return true
    case 'mentalHealthIndicator':
    case 'unknownNatureCode':
      return false // derived from the nature code and flags, which are enumerated
    case 'frequentCaller':
      return false // derived from priorCallsForSubject30d, whose boundary is enumerated
    default:
      return unhandled(fact)
  }
}

/** Sets a numeric fact (see setBooleanFact for why the switch is exhaustive). */
function setNumericFact(f: RoutingFacts, fact: NumericFact, value: number): void {
  switch (fact) {
    case 'priority':
      f.priority = value
      return
    case 'priorCallsForSubject30d':
    case 'priorCallsAtAddress30d':
      f.history[fact] = value
      return
    default:
      unhandled(fact)
  }
}

function unhandled(fact: never): never {
  throw new Error(`verification does not know the fact ${String(fact)}`)
}

const SETTABLE_BOOLEANS: readonly BooleanFact[] = BOOLEAN_FACTS.filter((fact) => setBooleanFact(baseFacts(), fact, false))

interface Dimension {
  values: unknown[]
  /** Applied after the agency is set (a time slot depends on the agency's time zone). */
  apply(f: RoutingFacts, value: unknown): void
  describe(value: unknown, agency: string): string | null
}

interface Space {
  codes: CodeClass[]
  agencies: AgencyClass[]
  flags: FlagName[]
  dims: Dimension[] // everything but code, agency and flags
  size: number
}

function factSpace(doc: RuleSet, v: Vocabulary, safetyCodes: ReadonlySet<string>): Space {
  const codes = codeClasses(doc, v, safetyCodes)
  const agencies = agencyClasses(doc, v)
  const flags = FLAG_NAMES.filter((f) => v.flags.has(f) || SAFETY_FLAGS.includes(f) || MEDICAL_FLAGS.includes(f) || f === 'mentalHealth' || f === 'suicidalIdeation')
  const dims: Dimension[] = []
  if (v.eventTypes) {
    dims.push({ values: [...EVENT_TYPES], apply: (f, x) => (f.eventType = x as EventType), describe: (x) => String(x) })
  }
  for (const fact of NUMERIC_FACTS) {
    if (!v.numbers.has(fact)) continue
    // Priorities are 1–5 (the wire contract); counts are 0 and up.
    const values = fact === 'priority' ? [1, 2, 3, 4, 5] : countValues(v.numbers.get(fact))
    dims.push({ values, apply: (f, x) => setNumericFact(f, fact, x as number), describe: (x) => `${fact} ${String(x)}` })
  }
  if (v.times.length) {
    const slots = new Map(agencies.map((a) => [a.sample, timeSlots(doc, a.sample, v.times)]))
    const most = Math.max(...[...slots.values()].map((s) => s.length))
    const slot = (agency: string, i: number) => {
      const list = slots.get(agency)!
      return list[Math.min(i, list.length - 1)]!
    }
    dims.push({
      values: Array.from({ length: most }, (_, i) => i),
      apply: (f, x) => (f.at = slot(f.agency, x as number).at),
      describe: (x, agency) => slot(agency, x as number).label,
    })
  }
  for (const fact of SETTABLE_BOOLEANS) {
    // CRU availability is always enumerated: fallbacks depend on it even when no rule tests it.
    if (fact !== 'cruAvailable' && !v.booleans.has(fact)) continue
    dims.push({
      values: [true, false],
      apply: (f, x) => setBooleanFact(f, fact, x as boolean),
      describe: (x) => (fact === 'cruAvailable' ? (x ? 'CRU available' : 'CRU unavailable') : x ? fact : `not ${fact}`),
    })
  }
  const size = codes.length * agencies.length * 2 ** flags.length * dims.reduce((n, d) => n * d.values.length, 1)
  return { codes, agencies, flags, dims, size }
}

const WEEK = 7 * 1440
const DAY_NAMES = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const
const hhmm = (minute: number) => `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`

/**
 * One instant per distinct answer of the time conditions, in the agency's time zone. The answers
 * change only at the windows' edges, so the edges (and the start of the week) are the candidates;
 * local time is all a time condition reads, so one reference week stands for every week.
 */
function timeSlots(doc: RuleSet, agency: string, windows: TimeWindow[]): { at: string; label: string }[] {
  const zone = agencyTimeZone(doc, agency)
  const compiled = windows.map(compileWindow)
  const points = new Set<number>([0])
  for (const w of compiled) {
    for (const d of w.days) {
      points.add(d * 1440 + w.from)
      points.add((w.to > w.from ? d * 1440 + w.to : ((d + 1) % 7) * 1440 + w.to) % WEEK)
    }
  }
  const seen = new Set<string>()
  const slots: { at: string; label: string }[] = []
  for (const p of [...points].sort((a, b) => a - b)) {
    const day = Math.floor(p / 1440)
    const minute = p % 1440
    const answers = compiled.map((w) => (inWindow(w, day, minute) ? 1 : 0)).join('')
    if (seen.has(answers)) continue
    seen.add(answers)
    slots.push({ at: instantAt(zone, day, minute), label: `at ${DAY_NAMES[day]} ${hhmm(minute)} (${zone})` })
  }
  return slots
}

/** An instant in the week of Monday 2026-01-05 whose local time in `zone` is the given weekday and minute. */
function instantAt(zone: string, day: number, minute: number): string {
  const target = day * 1440 + minute
  let ms = Date.UTC(2026, 0, 5) + target * 60_000
  for (let i = 0; i < 4; i++) {
    const lt = localTime(new Date(ms), zone)
    let diff = lt.day * 1440 + lt.minute - target
    if (diff > WEEK / 2) diff -= WEEK
    if (diff < -WEEK / 2) diff += WEEK
    if (diff === 0) break
    ms -= diff * 60_000
  }
  return new Date(ms).toISOString()
}

function baseFacts(): RoutingFacts {
  return {
    eventType: 'call.created',
    agency: '',
    natureCode: '',
    priority: 3,
    flags: Object.fromEntries(FLAG_NAMES.map((f) => [f, false])) as RoutingFacts['flags'],
    dispatcherOverride: null, // a dispatcher override is a human decision, outside the invariants
    at: '2026-01-05T12:00:00.000Z',
    cru: { available: true, reason: null },
    history: { priorCallsForSubject30d: 0, priorCallsAtAddress30d: 0, caseManagerActive: false },
  }
}

interface Visit {
  facts: RoutingFacts
  decision: RoutingDecision
  code: CodeClass
  agency: AgencyClass
  mask: number // the enumerated flags that are set (bit i: space.flags[i])
  describe(): string
}

/**
 * Calls `visit` with every class of the fact space, decided by the compiled rule set. A visit's
 * `describe` is valid only during the visit (it reads the enumeration's position).
 */
function* enumerate(doc: RuleSet, space: Space, visit: (v: Visit) => void): Generator<undefined, void> {
  const compiled = compileRuleSet(doc)
  const combos = 2 ** space.flags.length
  const dimIndex = new Array<number>(space.dims.length).fill(0)
  const template = baseFacts()
  let done = 0
  for (const agency of space.agencies) {
    for (const code of space.codes) {
      const raw = rawCodeFor(code, agency)
      if (raw === null) continue // this agency's map sends every code of the class elsewhere
      let mask = 0
      const describe = () => describeClass(space, code, agency, raw, mask, space.dims.map((d, i) => d.values[dimIndex[i]!]))
      for (; mask < combos; mask++) {
        dimIndex.fill(0)
        const flags = { ...template.flags }
        for (let i = 0; i < space.flags.length; i++) if (mask & (1 << i)) flags[space.flags[i]!] = true
        // One facts object per flag combination: every dimension sets its own field on each step,
        // and the engine keeps nothing of the facts it is given.
        const facts: RoutingFacts = { ...template, agency: agency.sample, natureCode: raw, flags, history: { ...template.history } }
        for (;;) {
          for (let i = 0; i < space.dims.length; i++) space.dims[i]!.apply(facts, space.dims[i]!.values[dimIndex[i]!])
          visit({ facts, decision: compiled.decide(facts), code, agency, mask, describe })
          if (++done % YIELD_EVERY === 0) yield undefined
          // Next combination of the other dimensions (an odometer).
          let i = 0
          while (i < dimIndex.length && ++dimIndex[i]! === space.dims[i]!.values.length) dimIndex[i++] = 0
          if (i === dimIndex.length) break
        }
      }
    }
  }
}

function describeClass(space: Space, code: CodeClass, agency: AgencyClass, raw: string, mask: number, values: unknown[]): string {
  const codeText = code.unlisted && code.members.length === 0 ? `an unlisted nature code (e.g. ${raw})` : `nature code ${raw}`
  const agencyText = agency.other && agency.members.length === 0 ? 'any other agency' : `agency ${agency.sample}`
  const flags = space.flags.filter((_, i) => mask & (1 << i))
  const rest = space.dims.map((d, i) => d.describe(values[i], agency.sample)).filter((s): s is string => s !== null)
  return [codeText, agencyText, flags.length ? `flags ${flags.join('+')}` : 'no flags', ...rest].join(', ')
}

const hasQueue = (d: RoutingDecision, queue: string) => d.assignments.some((a) => a.queue === queue)

function* verifyParsed(doc: RuleSet, safetyCodes: ReadonlySet<string>): Generator<undefined, VerificationReport> {
  const v = vocabulary(doc)
  const space = factSpace(doc, v, safetyCodes)
  const findings: Finding[] = []
  const factSpaceInfo = { classes: space.size, natureCodeClasses: space.codes.length, agencyClasses: space.agencies.length, flags: space.flags }
  if (space.size > MAX_FACT_CLASSES) {
    findings.push({
      kind: 'fact-space-too-large',
      message: `the rule set distinguishes ${space.size} classes of calls (more than ${MAX_FACT_CLASSES}); it cannot be proven safe — use fewer distinct nature-code lists, flags or thresholds`,
    })
    return { ok: false, version: doc.version, findings, coverage: [], factSpace: factSpaceInfo }
  }

  const fired = new Map<string, number>(doc.rules.map((r) => [r.id, 0]))
  const violations = { police: new Map<string, string[]>(), ems: new Map<string, string[]>(), primary: new Map<string, string[]>(), cru: new Map<string, string[]>() }
  const note = (m: Map<string, string[]>, ruleId: string, example: () => string) => {
    const list = m.get(ruleId) ?? []
    if (list.length < MAX_EXAMPLES) list.push(example())
    m.set(ruleId, list)
  }
  const safetyMask = maskOf(space.flags, SAFETY_FLAGS)
  const medicalMask = maskOf(space.flags, MEDICAL_FLAGS)
  interface Reach {
    route: Route
    ruleId: string
    fallback: boolean
    classes: number
    codes: Set<string>
    seen: Set<CodeClass>
    unlisted: boolean
    and: number
    or: number
    combos: Set<number>
  }
  const coverage = new Map<string, [Reach | null, Reach | null]>()

  yield* enumerate(doc, space, ({ facts, decision: d, code, mask, describe }) => {
    fired.set(d.ruleId, (fired.get(d.ruleId) ?? 0) + 1)
    const safety = (mask & safetyMask) !== 0 || code.safety
    const medical = (mask & medicalMask) !== 0 || code.medical
    let primaries = 0
    let primaryQueue = ''
    for (const a of d.assignments) {
      if (a.role === 'primary') {
        primaries++
        primaryQueue = a.queue
      }
    }
    if (safety && !(primaries === 1 && primaryQueue === 'police')) note(violations.police, d.ruleId, describe)
    if (medical && !hasQueue(d, 'ems')) note(violations.ems, d.ruleId, describe)
    if (primaries !== 1) note(violations.primary, d.ruleId, describe)
    if (!facts.cru.available && hasQueue(d, 'cru')) note(violations.cru, d.ruleId, describe)

    const fallback = d.fallback !== null
    // A rule and whether its fallback applied determine the route: no key strings on this hot path.
    let pair = coverage.get(d.ruleId)
    if (!pair) {
      pair = [null, null]
      coverage.set(d.ruleId, pair)
    }
    let c = pair[fallback ? 1 : 0]
    if (!c) {
      c = { route: d.route, ruleId: d.ruleId, fallback, classes: 0, codes: new Set(), seen: new Set(), unlisted: false, and: -1, or: 0, combos: new Set() }
      pair[fallback ? 1 : 0] = c
    }
    c.classes++
    if (!c.seen.has(code)) {
      c.seen.add(code)
      for (const m of code.members) c.codes.add(m)
      if (code.unlisted) c.unlisted = true
    }
    c.and &= mask
    c.or |= mask
    c.combos.add(mask)
  })

  const ruleIndex = new Map(doc.rules.map((r, i) => [r.id, i]))
  const report = (kind: FindingKind, m: Map<string, string[]>, what: (ruleId: string) => string) => {
    for (const [ruleId, examples] of m) {
      findings.push({ kind, ruleId, path: `rules[${ruleIndex.get(ruleId)}]`, message: what(ruleId), examples })
    }
  }
  report('police-invariant', violations.police, (id) => `rule ${id} can decide a call with weapons, violence, a threat to others, a crime in progress or a violent nature code without police as primary (DESIGN rule 1)`)
  report('ems-invariant', violations.ems, (id) => `rule ${id} can decide a call with a medical emergency, an injury or a medical nature code without EMS (DESIGN rule 2)`)
  report('one-primary-invariant', violations.primary, (id) => `rule ${id} can give a decision without exactly one primary assignment`)
  report('cru-availability-invariant', violations.cru, (id) => `rule ${id} can assign CRU while CRU is not available for the agency (outside its hours or at capacity); give it a fallback (DESIGN rule 7)`)

  const unfired = doc.rules.flatMap((rule, i) => (fired.get(rule.id) ? [] : [i]))
  const shadowers = yield* shadowedBy(doc, space, unfired)
  unfired.forEach((i, k) => {
    const rule = doc.rules[i]!
    if (shadowers[k]!.length === 0) {
      findings.push({ kind: 'unsatisfiable-rule', ruleId: rule.id, path: `rules[${i}].when`, message: `rule ${rule.id} can never fire: no call satisfies its conditions` })
    } else {
      findings.push({
        kind: 'shadowed-rule',
        ruleId: rule.id,
        path: `rules[${i}].when`,
        message: `rule ${rule.id} can never fire: every call it matches is decided earlier, by ${shadowers[k]!.join(', ')}`,
      })
    }
  })

  const routes: RouteCoverage[] = ROUTES.map((route) => {
    const entries = [...coverage.values()].flat().filter((c): c is Reach => c !== null && c.route === route)
    entries.sort((a, b) => (ruleIndex.get(a.ruleId)! - ruleIndex.get(b.ruleId)!) || Number(a.fallback) - Number(b.fallback))
    const rules = entries.map(
      (c): CoverageRule => ({
        ruleId: c.ruleId,
        fallback: c.fallback,
        factClasses: c.classes,
        natureCodes: [...c.codes].sort(),
        unlistedNatureCodes: c.unlisted,
        flagsAlways: space.flags.filter((_, i) => c.and & (1 << i)),
        flagsNever: space.flags.filter((_, i) => !(c.or & (1 << i))),
        flagCombinations: c.combos.size,
      }),
    )
    return {
      route,
      factClasses: rules.reduce((n, r) => n + r.factClasses, 0),
      natureCodes: [...new Set(rules.flatMap((r) => r.natureCodes))].sort(),
      rules,
    }
  })
  return { ok: findings.length === 0, version: doc.version, findings, coverage: routes, factSpace: factSpaceInfo }
}

const maskOf = (flags: readonly FlagName[], of: readonly FlagName[]): number => flags.reduce((m, f, i) => (of.includes(f) ? m | (1 << i) : m), 0)

/**
 * For each rule of `indexes` (rules that never fired): the earlier rules that take every call it
 * matches, empty when no call matches it at all. Each is tried alone (before the default) to find
 * the calls it matches; all of them in one more pass over the space, however many there are (a
 * pass per rule made a draft with many duplicate rules cost seconds each, in the API process).
 */
function* shadowedBy(doc: RuleSet, space: Space, indexes: readonly number[]): Generator<undefined, string[][]> {
  if (!indexes.length) return []
  const last = doc.rules[doc.rules.length - 1]!
  const alone = indexes.map((i) => {
    const rule = doc.rules[i]!
    return { id: rule.id, compiled: compileRuleSet({ ...doc, rules: i === doc.rules.length - 1 ? [rule] : [rule, last] }), by: new Set<string>() }
  })
  yield* enumerate(doc, space, ({ facts, decision }) => {
    for (const a of alone) if (a.compiled.decide(facts).ruleId === a.id) a.by.add(decision.ruleId)
  })
  return alone.map((a) => doc.rules.map((r) => r.id).filter((id) => a.by.has(id)))
}

/** The report as text: one line per finding, examples indented. */
export function formatReport(report: VerificationReport): string {
  if (report.ok) return `rule set ${report.version ?? '?'} passed verification (${report.factSpace?.classes ?? 0} classes of calls checked)`
  const lines = [`rule set ${report.version ?? '?'} failed verification with ${report.findings.length} finding(s):`]
  for (const f of report.findings) {
    lines.push(`- [${f.kind}] ${f.message}`)
    for (const e of f.examples ?? []) lines.push(`    e.g. ${e}`)
  }
  return lines.join('\n')
}

const codeList = (codes: readonly string[], unlisted: boolean): string => {
  const shown = codes.length <= 12 ? codes.join(', ') : `${codes.length} codes (${codes.slice(0, 6).join(', ')}, …)`
  return [shown, unlisted ? 'unlisted codes' : ''].filter(Boolean).join(' and ') || 'no codes'
}

/** The report with its coverage as text: per route, each rule that reaches it, its nature codes and flags. */
export function formatReportWithCoverage(report: VerificationReport): string {
  const lines = [formatReport(report)]
  if (report.coverage.length) lines.push('', 'coverage (route ← rule: nature codes; flags):')
  for (const route of report.coverage) {
    lines.push(`${route.route}${route.rules.length ? '' : ': nothing reaches it'}`)
    for (const r of route.rules) {
      const flags = [r.flagsAlways.length ? `always ${r.flagsAlways.join(', ')}` : '', r.flagsNever.length ? `never ${r.flagsNever.join(', ')}` : ''].filter(Boolean).join('; ') || 'any flags'
      lines.push(`  ← ${r.ruleId}${r.fallback ? ' (CRU fallback)' : ''}: ${codeList(r.natureCodes, r.unlistedNatureCodes)}; ${flags}`)
    }
  }
  return lines.join('\n')
}
