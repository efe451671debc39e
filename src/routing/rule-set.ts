/**
 * The rule-set document: what county supervisors read, edit and version. A zod schema for its shape
 * plus the semantic checks a shape cannot express (ids, references, the default rule, assignments),
 * so a rule set that parses can be compiled and will always give a well-formed decision.
 */
import { z } from 'zod'
import {
  BOOLEAN_FACTS,
  CONTRACT_NATURE_CODES,
  EVENT_TYPES,
  FLAG_NAMES,
  isAgencyId,
  NUMERIC_FACTS,
  OVERRIDE_RULE_ID,
  QUEUES,
  ROLES,
  ROUTES,
  type AssignmentSpec,
  type BooleanFact,
  type EventType,
  type FlagName,
  type NumericFact,
  type QueueName,
  type Route,
} from './types.js'

/** Conditions over facts: the grammar of `when`, `definitions` and fallbacks. */
export type Condition =
  | { all: Condition[] }
  | { any: Condition[] }
  | { not: Condition }
  | { ref: string }
  | { flag: FlagName }
  | { natureCode: string[] }
  | { agency: string[] }
  | { eventType: EventType[] }
  | { time: TimeWindow }
  | { fact: BooleanFact }
  | { fact: NumericFact; gte?: number; lte?: number }

export const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const
export type Day = (typeof DAYS)[number]

/**
 * A weekly time window in the agency's local time (the time zone of its cru entry, else the rule
 * set's, else America/Chicago); `to` not after `from` runs past midnight. Every day when `days` is absent.
 */
export interface TimeWindow {
  days?: Day[]
  from: string
  to: string
}

export const DEFAULT_TIME_ZONE = 'America/Chicago'

/** The queue each route must have as primary: a route name that disagrees with its primary is a typo. */
export const ROUTE_PRIMARY: Readonly<Record<Route, QueueName>> = {
  police: 'police',
  co_response: 'police',
  cru: 'cru',
  ems: 'ems',
  case_manager: 'case_management',
}

export class RuleSetError extends Error {
  readonly issues: string[]
  constructor(issues: string[]) {
    super(`invalid rule set: ${issues.join('; ')}`)
    this.name = 'RuleSetError'
    this.issues = issues
  }
}

const isTimeZone = (tz: string): boolean => {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

const timeZoneSchema = z.string().refine(isTimeZone, { message: 'unknown IANA time zone' })
const nonEmpty = z.string().min(1)

const timeSchema = z.string().regex(/^(([01]\d|2[0-3]):[0-5]\d|24:00)$/, { message: 'expected HH:MM (00:00–24:00)' })

export const conditionSchema: z.ZodType<Condition> = z.lazy(() =>
  z.union(
    [
      z.strictObject({ all: z.array(conditionSchema) }),
      z.strictObject({ any: z.array(conditionSchema).min(1) }),
      z.strictObject({ not: conditionSchema }),
      z.strictObject({ ref: nonEmpty }),
      z.strictObject({ flag: z.enum(FLAG_NAMES) }),
      z.strictObject({ natureCode: z.array(nonEmpty).min(1) }),
      z.strictObject({ agency: z.array(nonEmpty).min(1) }),
      z.strictObject({ eventType: z.array(z.enum(EVENT_TYPES)).min(1) }),
      z.strictObject({ time: z.strictObject({ days: z.array(z.enum(DAYS)).min(1).optional(), from: timeSchema, to: timeSchema }) }),
      z.strictObject({ fact: z.enum(BOOLEAN_FACTS) }),
      z
        .strictObject({ fact: z.enum(NUMERIC_FACTS), gte: z.number().optional(), lte: z.number().optional() })
        .refine((c) => c.gte !== undefined || c.lte !== undefined, { message: 'a numeric fact needs gte or lte' }),
    ],
    { error: 'not a condition: expected one of all, any, not, ref, flag, natureCode, agency, eventType, time, fact' },
  ),
).meta({ id: 'RuleSetCondition' })


const windowSchema = z.strictObject({ days: z.array(z.enum(DAYS)).min(1), from: timeSchema, to: timeSchema })

const cruEntrySchema = z.strictObject({
  /** "always", or weekly windows in the time zone; a window whose `to` is not after `from` runs past midnight. */
  schedule: z.union([z.literal('always'), z.array(windowSchema)]),
  timeZone: timeZoneSchema.optional(),
  /**
   * DESIGN rule 7 "over capacity": with this many open CRU assignments (queued, offered,
   * acknowledged or accepted) of the agencies this entry covers, CRU takes no new call.
   */
  maxOpenAssignments: z.number().int().min(0).optional(),
})

const assignmentSchema = z.strictObject({
  queue: z.enum(QUEUES).refine((q) => q !== 'follow_up', {
    message: 'follow_up is not an assignment of the call: use the action followUp (DESIGN rule 8)',
  }),
  role: z.enum(ROLES),
})

const assignmentsSchema = z.array(assignmentSchema).min(1)

const actionSchema = z.strictObject({
  route: z.enum(ROUTES),
  /** Defaults to routes[route]. */
  assignments: assignmentsSchema.optional(),
  followUp: z
    .strictObject({
      queue: z.literal('follow_up'),
      dueWithinHours: z.number().positive().max(24 * 31),
      /** Only when this holds (e.g. a mental-health indicator); always when absent. */
      when: conditionSchema.optional(),
    })
    .optional(),
  /** DESIGN rule 7: what to do instead when `when` holds (e.g. CRU not available). */
  fallback: z
    .strictObject({
      when: conditionSchema,
      route: z.enum(ROUTES),
      assignments: assignmentsSchema.optional(),
      /** Plain English; `{cruReason}` is replaced by the CRU availability reason from the facts. */
      reason: nonEmpty,
    })
    .optional(),
  review: z.array(nonEmpty).optional(),
})

const ruleSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9]+(-[a-z0-9]+)*$/, { message: 'rule ids are kebab-case' }),
  principle: z.number().int().min(1).max(10),
  description: nonEmpty,
  when: conditionSchema,
  action: actionSchema,
})

const ruleSetShape = z.strictObject({
  name: nonEmpty,
  version: z.number().int().positive().max(2_147_483_647), // stored in an integer column
  description: z.string(),
  timeZone: timeZoneSchema.optional(),
  natureCodes: z.array(nonEmpty).min(1),
  natureCodeMaps: z.record(nonEmpty, z.record(nonEmpty, nonEmpty)).optional(),
  /** The `frequentCaller` fact: at least minCalls calls for the subject in 30 days, this one included (default 3). */
  frequentCaller: z.strictObject({ minCalls: z.number().int().min(2).max(1000) }).optional(),
  cru: z.record(nonEmpty, cruEntrySchema),
  routes: z.strictObject({
    police: assignmentsSchema,
    cru: assignmentsSchema,
    co_response: assignmentsSchema,
    ems: assignmentsSchema,
    case_manager: assignmentsSchema,
  }),
  definitions: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/), conditionSchema).optional(),
  rules: z.array(ruleSchema).min(1),
  /**
   * The fallback of an assignment that is declined or not acknowledged in time: its queue → the
   * route whose assignments the call then gets (CRU → co-response → police). A queue not named is
   * offered again; EMS (DESIGN rule 2) and follow-ups (their call is closed) always are. Absent:
   * DEFAULT_ESCALATION.
   */
  escalation: z.partialRecord(z.enum(QUEUES), z.enum(ROUTES)).optional(),
})

export const DEFAULT_ESCALATION: Readonly<Partial<Record<QueueName, Route>>> = Object.freeze({ cru: 'co_response', case_management: 'cru' })

type Shape = z.infer<typeof ruleSetShape>
type Path = (string | number)[]
/** Kinds of semantic issue that verification reports under their own name (see verify.ts). */
export type IssueKind = 'duplicate-rule-id' | 'no-default-rule' | 'one-primary-invariant'
type Report = (message: string, path: Path, kind?: IssueKind) => void

export const ruleSetSchema = ruleSetShape
  .superRefine((doc, ctx) => {
    checkSemantics(doc, (message, path, kind) => ctx.addIssue({ code: 'custom', message, path, ...(kind ? { params: { kind } } : {}) }))
  })
  .meta({ id: 'RuleSet', description: 'A versioned routing rule-set document (see README: Rule sets)' })

export type RuleSet = z.infer<typeof ruleSetSchema>

/** Parse and check a rule-set document; throws a RuleSetError naming every problem. */
export function parseRuleSet(doc: unknown): RuleSet {
  const result = ruleSetSchema.safeParse(doc)
  if (!result.success) throw new RuleSetError(formatIssues(result.error.issues))
  return result.data
}

/** Children of a condition, for walks. */
export function subConditions(c: Condition): Condition[] {
  if ('all' in c) return c.all
  if ('any' in c) return c.any
  if ('not' in c) return [c.not]
  return []
}

export const isUnconditional = (c: Condition): boolean => 'all' in c && c.all.length === 0

function checkSemantics(doc: Shape, report: Report): void {
  const known = new Set<string>()
  doc.natureCodes.forEach((code, i) => {
    if (known.has(code)) report(`nature code ${code} is listed twice`, ['natureCodes', i])
    known.add(code)
  })

  for (const [agency, map] of Object.entries(doc.natureCodeMaps ?? {})) {
    for (const [from, to] of Object.entries(map)) {
      if (!known.has(to)) report(`${agency} maps ${from} onto ${to}, which is not in natureCodes`, ['natureCodeMaps', agency, from])
    }
  }

  if (!doc.cru['*']) report('cru needs a "*" entry for agencies without their own schedule', ['cru'])
  for (const [agency, entry] of Object.entries(doc.cru)) {
    if (entry.schedule === 'always') continue
    entry.schedule.forEach((w, i) => {
      if (w.from === w.to || w.from === '24:00') report(`window ${w.from}–${w.to} is empty or ambiguous`, ['cru', agency, 'schedule', i])
      if (new Set(w.days).size !== w.days.length) report('a day is listed twice', ['cru', agency, 'schedule', i, 'days'])
    })
  }

  for (const route of ROUTES) checkAssignments(route, doc.routes[route], ['routes', route], report)
  for (const [queue, route] of Object.entries(doc.escalation ?? {})) {
    if (ROUTE_PRIMARY[route] === queue) report(`escalation of ${queue} leads back to ${queue}: name a route with another primary, or leave ${queue} out to offer it again`, ['escalation', queue])
  }

  // References: every ref resolves, and definitions do not refer to themselves through others.
  const definitions = doc.definitions ?? {}
  const walk = (c: Condition, path: Path): void => {
    if ('ref' in c) {
      if (!Object.hasOwn(definitions, c.ref)) report(`ref ${c.ref} is not a definition`, [...path, 'ref'])
    } else if ('natureCode' in c) {
      c.natureCode.forEach((code, i) => {
        if (!known.has(code)) report(`nature code ${code} is not in natureCodes`, [...path, 'natureCode', i])
      })
    } else if ('time' in c) {
      if (c.time.from === c.time.to || c.time.from === '24:00') report(`time window ${c.time.from}–${c.time.to} is empty or ambiguous`, [...path, 'time'])
    } else if ('all' in c) c.all.forEach((s, i) => walk(s, [...path, 'all', i]))
    else if ('any' in c) c.any.forEach((s, i) => walk(s, [...path, 'any', i]))
    else if ('not' in c) walk(c.not, [...path, 'not'])
  }
  for (const [name, c] of Object.entries(definitions)) walk(c, ['definitions', name])
  const cycle = findCycle(definitions)
  if (cycle) report(`definitions refer to themselves: ${cycle.join(' → ')}`, ['definitions', cycle[0]!])

  const ids = new Set<string>()
  doc.rules.forEach((rule, i) => {
    const at: Path = ['rules', i]
    if (ids.has(rule.id)) report(`rule id ${rule.id} is used twice`, [...at, 'id'], 'duplicate-rule-id')
    if (rule.id === OVERRIDE_RULE_ID) report(`rule id ${OVERRIDE_RULE_ID} is reserved for dispatcher overrides`, [...at, 'id'])
    ids.add(rule.id)
    walk(rule.when, [...at, 'when'])
    const last = i === doc.rules.length - 1
    if (last && !isUnconditional(rule.when)) {
      report(`the last rule (${rule.id}) must be the default: "when": { "all": [] }`, [...at, 'when'], 'no-default-rule')
    }
    if (!last && isUnconditional(rule.when)) {
      report(`rule ${rule.id} has no conditions but is not last: the rules after it could never fire`, [...at, 'when'])
    }
    const { action } = rule
    checkAssignments(action.route, action.assignments ?? doc.routes[action.route], [...at, 'action', 'assignments'], report)
    if (action.followUp?.when) walk(action.followUp.when, [...at, 'action', 'followUp', 'when'])
    if (action.fallback) {
      const fb = action.fallback
      walk(fb.when, [...at, 'action', 'fallback', 'when'])
      checkAssignments(fb.route, fb.assignments ?? doc.routes[fb.route], [...at, 'action', 'fallback', 'assignments'], report)
    }
  })
}

const notAgencyId = (agency: string): string =>
  `no call can have agency ${agency}: agency ids are compared exactly, as calls carry them (lower-case letters, digits, ".", "_" and "-", e.g. hastings-pd)`

/**
 * What a rule set must meet to be verified now, beyond the schema: checks added after rule sets
 * were first stored. The schema compiles and serves every stored version, so these are not in it:
 * an upgrade must never refuse the active version at start (the registry compiles it). Activation
 * verifies, so a stored version that breaks one is not activated again, though a rollback to it is
 * (verified without them); escalation ignores its fallback for EMS or a follow-up.
 */
export function newDocumentIssues(doc: RuleSet): { message: string; path: Path }[] {
  const issues: { message: string; path: Path }[] = []
  // Agency ids are compared exactly: one no call can carry (`Hastings-PD`) would apply to nobody.
  const listed = new Set(doc.natureCodes)
  for (const [agency, map] of Object.entries(doc.natureCodeMaps ?? {})) {
    if (!isAgencyId(agency)) issues.push({ message: notAgencyId(agency), path: ['natureCodeMaps', agency] })
    // A listed code means the same for every agency: mapped away, SHOOT could become EDP for one
    // agency, and the invariants, proved on the code after the map, would never see a shooting.
    for (const from of Object.keys(map)) {
      if (listed.has(from) || CONTRACT_NATURE_CODES.has(from)) {
        issues.push({ message: `${agency} maps ${from}, a code of natureCodes or one whose meaning DESIGN fixes: it stays itself for every agency; map only the agency's own codes`, path: ['natureCodeMaps', agency, from] })
      }
    }
  }
  for (const agency of Object.keys(doc.cru)) {
    if (agency !== '*' && !isAgencyId(agency)) issues.push({ message: notAgencyId(agency), path: ['cru', agency] })
  }
  const walk = (c: Condition, path: Path): void => {
    if ('agency' in c) {
      c.agency.forEach((agency, i) => {
        if (!isAgencyId(agency)) issues.push({ message: notAgencyId(agency), path: [...path, 'agency', i] })
      })
    }
    subConditions(c).forEach((sub, i) => walk(sub, 'not' in c ? [...path, 'not'] : [...path, 'all' in c ? 'all' : 'any', i]))
  }
  for (const [name, c] of Object.entries(doc.definitions ?? {})) walk(c, ['definitions', name])
  doc.rules.forEach((rule, i) => {
    walk(rule.when, ['rules', i, 'when'])
    if (rule.action.followUp?.when) walk(rule.action.followUp.when, ['rules', i, 'action', 'followUp', 'when'])
    if (rule.action.fallback) walk(rule.action.fallback.when, ['rules', i, 'action', 'fallback', 'when'])
  })
  const escalation = doc.escalation ?? {}
  // DESIGN rule 2: a medical emergency always gets EMS. Escalation drops a support of a queue with a
  // fallback and replaces a primary, so any fallback for EMS leaves an injured caller without one.
  if (escalation.ems) issues.push({ message: 'EMS is never escalated away: a medical emergency always gets EMS (DESIGN rule 2); leave ems out to offer it again', path: ['escalation', 'ems'] })
  // A follow-up comes after its call has closed: a fallback route would send responders to a call
  // that is over, where no close would ever cancel them.
  if (escalation.follow_up) issues.push({ message: 'a follow-up is never escalated to a route: its call is closed; leave follow_up out to offer it again', path: ['escalation', 'follow_up'] })
  return issues
}

/** Exactly one primary, no queue twice, and a primary that agrees with the route's name. */
function checkAssignments(route: Route, assignments: readonly AssignmentSpec[], path: Path, report: Report): void {
  const primaries = assignments.filter((a) => a.role === 'primary')
  if (primaries.length !== 1) report(`route ${route} needs exactly one primary assignment, has ${primaries.length}`, path, 'one-primary-invariant')
  const queues = new Set(assignments.map((a) => a.queue))
  if (queues.size !== assignments.length) report(`route ${route} assigns a queue twice`, path)
  const primary = primaries[0]
  if (primaries.length === 1 && primary && primary.queue !== ROUTE_PRIMARY[route]) {
    report(`route ${route} must have ${ROUTE_PRIMARY[route]} as primary, not ${primary.queue}`, path)
  }
  if (route === 'co_response' && !assignments.some((a) => a.queue === 'cru' && a.role === 'support')) {
    report('a co_response needs CRU as support', path)
  }
}

function findCycle(definitions: Record<string, Condition>): string[] | null {
  const state = new Map<string, 'visiting' | 'done'>()
  const refsOf = (c: Condition, out: string[]): string[] => {
    if ('ref' in c) out.push(c.ref)
    for (const s of subConditions(c)) refsOf(s, out)
    return out
  }
  const visit = (name: string, stack: string[]): string[] | null => {
    const s = state.get(name)
    if (s === 'done') return null
    if (s === 'visiting') return [...stack.slice(stack.indexOf(name)), name]
    const c = definitions[name]
    if (!c) return null // an unresolved ref is reported on its own
    state.set(name, 'visiting')
    for (const ref of refsOf(c, [])) {
      const found = visit(ref, [...stack, name])
      if (found) return found
    }
    state.set(name, 'done')
    return null
  }
  for (const name of Object.keys(definitions)) {
    const found = visit(name, [])
    if (found) return found
  }
  return null
}

const renderPath = (path: readonly PropertyKey[]): string =>
  path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${String(p)}` : String(p)), '') || '(document)'

const depth = (issues: readonly z.core.$ZodIssue[]): number => Math.max(0, ...issues.map((i) => i.path.length))

/**
 * Issues as "path: message". A condition that fits no form of the grammar is reported through the
 * form it came closest to (fewest issues, then the deepest), not as a bare "invalid input".
 */
export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): string[] {
  return flattenIssues(issues, prefix).map((i) => `${renderPath(i.path)}: ${i.issue.message}`)
}

/** The issues formatIssues reports, with their zod issue and full path (verification classifies them). */
export function flattenIssues(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): { path: PropertyKey[]; issue: z.core.$ZodIssue }[] {
  const out: { path: PropertyKey[]; issue: z.core.$ZodIssue }[] = []
  for (const issue of issues) {
    const path = [...prefix, ...issue.path]
    const strangers = (branch: readonly z.core.$ZodIssue[]) => branch.some((i) => i.code === 'unrecognized_keys' && i.path.length === 0)
    if (issue.code === 'invalid_union' && issue.errors.length > 0 && !issue.errors.every(strangers)) {
      const closest = issue.errors.reduce((a, b) => (b.length < a.length || (b.length === a.length && depth(b) > depth(a)) ? b : a))
      out.push(...flattenIssues(closest, path))
    } else {
      out.push({ path, issue })
    }
  }
  return out
}

export { renderPath }
