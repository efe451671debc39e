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

/** The behavioral-health queues: what their responders write is health data. */
export const HEALTH_QUEUES: ReadonlySet<string> = new Set<QueueName>(['cru', 'case_management', 'follow_up'])

/**
 * Rule sets, shadow mode and case links reach every agency's calls: a key limited to some agencies
 * may not change them (nor read case links, which name county person ids). `what`: "rule sets are".
 */
export function requireCountyWide(p: Pick<Principal, 'agencies'>, what: string): void {
  if (p.agencies !== null) throw new AppError('forbidden', `${what} county-wide: only a key without an agency scope may do this`)
}
