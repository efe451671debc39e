import { AppError } from '../http/errors.js'
import type { QueueName } from '../routing/index.js'

export const API_ROLES = ['cad', 'console', 'supervisor', 'admin', 'auditor'] as const
export type ApiRole = (typeof API_ROLES)[number]

/** Who is calling: the API key's identity, role and scope. */
export interface Principal {
  keyId: string
  name: string
  role: ApiRole
  /** null: every agency. */
  agencies: readonly string[] | null
  /** For consoles: the queues they work; null: every queue. */
  queues: readonly QueueName[] | null
}

export const canActForAgency = (p: Pick<Principal, 'agencies'>, agency: string): boolean => p.agencies === null || p.agencies.includes(agency)
export const canSeeQueue = (p: { queues: readonly string[] | null }, queue: string): boolean => p.queues === null || p.queues.includes(queue)

/**
 * Criminal-justice and health data stay apart: a console that works only police (or EMS) queues
 * sees the decision, not the behavioral-health history behind it.
 */
export const seesHealthHistory = (p: Principal): boolean => p.role !== 'console' || p.queues === null || p.queues.some((q) => HEALTH_QUEUES.has(q))

/**
 * How a key came to read a call, for the audit record of the read: `agency` when it acts for the
 * call's agency; `assignment` when only an assignment one of its agencies holds on the call lets it
 * (a call handed to another agency), naming that agency (`agencies`, sorted, when several of the
 * key's agencies hold one).
 */
export type CallReadGrant = { via: 'agency' } | { via: 'assignment'; agency: string } | { via: 'assignment'; agencies: string[] }

/**
 * A call's personal data is read by its agency's supervisors and by the consoles that work it: a
 * console narrowed to some queues reads a call only once its agency holds an assignment in one of
 * them (a police desk has no business with a call CRU alone handles). An agency that still works an
 * assignment of a call handed to another agency reads the call as well: its responders need the
 * address and what the caller said as much as before the hand-over. null: the key may not read it.
 */
export function callReadGrant(p: Principal, call: { agency: string; assignments: ReadonlyArray<{ agency: string; queue: string }> }): CallReadGrant | null {
  const works = (a: { agency: string; queue: string }) => canActForAgency(p, a.agency) && (p.role !== 'console' || canSeeQueue(p, a.queue))
  // A narrowed console reads its own agency's call through that agency's assignment in its queues.
  const own = p.role === 'console' && p.queues !== null ? call.assignments.some((a) => a.agency === call.agency && works(a)) : canActForAgency(p, call.agency)
  if (own) return { via: 'agency' }
  const agencies = [...new Set(call.assignments.filter(works).map((a) => a.agency))].sort()
  if (agencies.length === 0) return null
  return agencies.length === 1 ? { via: 'assignment', agency: agencies[0]! } : { via: 'assignment', agencies }
}

/** The audit details of a call read: how it was granted, unless as the call's own agency (ids only). */
export const callReadDetails = (grant: CallReadGrant): Record<string, unknown> | undefined => (grant.via === 'assignment' ? { ...grant } : undefined)

/** The behavioral-health queues: what their responders write is health data. */
export const HEALTH_QUEUES: ReadonlySet<string> = new Set<QueueName>(['cru', 'case_management', 'follow_up'])

/**
 * The agencies a report covers (summary, replay, shadow report): the key's scope, narrowed by an
 * `agency` filter; null is every agency. A filter outside the scope is 403, the same whether or not
 * the agency exists (an empty answer would read as "no calls there").
 */
export function reportAgencies(p: Pick<Principal, 'agencies'>, agency: string | undefined): readonly string[] | null {
  if (agency === undefined) return p.agencies
  if (!canActForAgency(p, agency)) throw new AppError('forbidden', `this key may not see reports for agency ${agency}`)
  return [agency]
}

/**
 * Rule sets, shadow mode and case links reach every agency's calls: a key limited to some agencies
 * may not change them (nor read case links, which name county person ids). `what`: "rule sets are".
 */
export function requireCountyWide(p: Pick<Principal, 'agencies'>, what: string): void {
  if (p.agencies !== null) throw new AppError('forbidden', `${what} county-wide: only a key without an agency scope may do this`)
}
