import { z } from 'zod'
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
    disposition: z.string().nullable(),
    dueAt: z.string().nullable().describe('For follow-ups: when the follow-up must be done'),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'Assignment' })

export type AssignmentView = z.infer<typeof assignmentSchema>

export const DISPOSITIONS = [
  'resolved_by_phone',
  'field_response',
  'transported',
  'referred_crisis_center',
  'referred_case_management',
  'no_contact',
] as const
