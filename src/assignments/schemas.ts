import { z } from 'zod'
import { problemSchema } from '../http/problem.js'
import { QUEUES, ROLES } from '../routing/index.js'
import { ASSIGNMENT_STATUSES } from './state-machine.js'

export const assignmentSummarySchema = z
  .object({
    id: z.string().uuid(),
    queue: z.enum(QUEUES),
    role: z.enum(ROLES),
    status: z.enum(ASSIGNMENT_STATUSES),
  })
  .meta({ id: 'AssignmentSummary' })

export type AssignmentSummary = z.infer<typeof assignmentSummarySchema>

export const assignmentSchema = assignmentSummarySchema
  .extend({
    callId: z.string(),
    agency: z.string(),
    decisionId: z.string().uuid(),
    disposition: z.string().nullable().describe('Set on completion: one of the dispositions (APCO-like and the service’s own)'),
    dueAt: z.string().nullable().describe('For follow-ups: when the follow-up must be done'),
    overdue: z.boolean().describe('Still open past dueAt'),
    reservedUntil: z.string().nullable().describe('A reserved follow-up is offered at this time'),
    ackDeadlineAt: z.string().nullable().describe('Set when offered: not acknowledged by then, the assignment escalates. It stays set afterwards; it applies only while the status is queued or offered'),
    escalatedFrom: z.string().uuid().nullable().describe('The assignment whose decline or missed deadline created this one'),
    caseManager: z
      .string()
      .nullable()
      .describe(
        'For case management: the case manager it is for (DESIGN rule 6), the county case link’s `caseManager` as its decision saw it; it stays so when the link changes. Null on other queues, and when the decision saw no active link (a dispatcher override)',
      ),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'Assignment' })

export type AssignmentView = z.infer<typeof assignmentSchema>

/**
 * How an assignment ended. The service's own, then APCO-style CAD dispositions for what they do not
 * cover (APCO publishes no single normative list; these are the common CAD clearance codes).
 */
export const SERVICE_DISPOSITIONS = [
  'resolved_by_phone',
  'field_response',
  'transported',
  'referred_crisis_center',
  'referred_case_management',
  'no_contact',
] as const
export const APCO_DISPOSITIONS = [
  'advised', // settled by advice, in person
  'assisted',
  'report_taken',
  'arrest',
  'citation_issued',
  'referred_partner_agency',
  'unfounded',
  'gone_on_arrival',
  'unable_to_locate',
  'cancelled_by_caller',
  'duplicate',
] as const
export const DISPOSITIONS = [...SERVICE_DISPOSITIONS, ...APCO_DISPOSITIONS] as const
export type Disposition = (typeof DISPOSITIONS)[number]

/** A move refused from the assignment's status: what the status is now, and where the move starts from. */
export const illegalTransitionSchema = problemSchema
  .extend({
    currentStatus: z.enum(ASSIGNMENT_STATUSES).describe('The assignment’s status when the move was refused'),
    allowedFrom: z.array(z.enum(ASSIGNMENT_STATUSES)).describe('The statuses this move can be made from'),
    replacedBy: z
      .array(z.string().uuid())
      .optional()
      .describe('The open assignments that took over from this one (escalated or offered again after a missed deadline or a decline, followed down the chain), oldest first: those this key may see. Absent when there are none'),
  })
  .meta({ id: 'IllegalTransitionProblem' })
