import { z } from 'zod'
import { AGENCY_ID_MAX_LENGTH, AGENCY_ID_PATTERN, EVENT_TYPES, FLAG_NAMES, QUEUES, ROLES, ROUTES, type FlagName } from '../routing/index.js'
import { assignmentSummarySchema } from '../assignments/schemas.js'
import { AppError } from '../http/errors.js'
import { instant } from '../http/storable.js'

const flagShape = Object.fromEntries(FLAG_NAMES.map((f) => [f, z.boolean().default(false)])) as Record<FlagName, z.ZodDefault<z.ZodBoolean>>

/** Unknown flags are refused, not ignored: a misspelt `weapon: true` must never pass silently. */
export const flagsSchema = z.object(flagShape).strict().describe('Each flag defaults to false')

const text = (max: number) => z.string().max(max)

/**
 * The longest callId (an EIDO's `$id` becomes one). GET /v1/calls/{callId} must read back every id
 * POST accepts: the router's limit on a path parameter is this (counted once it is decoded).
 */
export const CALL_ID_MAX_LENGTH = 128
export const callIdSchema = z
  .string()
  .min(1)
  .max(CALL_ID_MAX_LENGTH)
  // A dot segment: every URL parser drops it (`/v1/calls/..` is `/v1/`), so the call could be stored and never read.
  .refine((id) => id !== '.' && id !== '..', 'not "." or "..": a URL cannot name such a call')

/** The longest caller phone; an EIDO callback number longer than this is left out, not refused. */
export const CALLER_PHONE_MAX_LENGTH = 32

export const callSchema = z
  .object({
    callId: callIdSchema.describe('The CAD incident number (not `.` or `..`, which a URL cannot name)'),
    agency: z
      .string()
      .min(1)
      .max(AGENCY_ID_MAX_LENGTH)
      .regex(AGENCY_ID_PATTERN, 'lower-case letters, digits, ".", "_" and "-"')
      .describe('The responsible agency, e.g. hastings-pd'),
    natureCode: z.string().min(1).max(32).describe('CAD nature code: an APCO code or the agency’s own, mapped by the rule set. Compared exactly, case included (`edp` is not `EDP`): a code the rule set does not list or map is unknown and marked for review; the flags still decide the route, and without one that does it goes to police'),
    priority: z.number().int().min(1).max(5).describe('1 is most urgent'),
    location: z
      .object({
        address: text(500).optional(),
        city: text(100).optional(),
        lat: z.number().min(-90).max(90).optional(),
        lon: z.number().min(-180).max(180).optional(),
      })
      .strict()
      .optional()
      .describe('Personal data: never logged'),
    caller: z.object({ phone: text(CALLER_PHONE_MAX_LENGTH).optional(), name: text(200).optional() }).strict().optional().describe('Personal data: never logged'),
    subject: z
      .object({
        personId: z.string().min(1).max(64).optional().describe('County person id, used for history facts'),
        name: text(200).optional(),
        birthDate: z.iso.date().optional(),
      })
      .strict()
      .optional()
      .describe('Personal data: never logged'),
    description: text(4000).optional().describe('Free text. Personal data: never logged'),
    flags: flagsSchema.default(() => flagsSchema.parse({})),
    dispatcherOverride: z.enum(ROUTES).optional().describe('A dispatcher’s route; wins over every rule and is recorded as such'),
    disposition: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .describe("Only on call.closed, e.g. resolved_by_phone. The first close's disposition is the call's: a later call.closed does not change it (applied: false)"),
  })
  .strict()

/**
 * How far ahead of the service's clock an event's occurredAt may be. A call's events apply in
 * occurredAt order, so one dated in the far future would leave every later event stored unapplied
 * and the call could never be closed. CAD clocks drift, and one sending local time as UTC is off by
 * up to 14 hours: a day refuses only what no wrong clock explains, never a CAD that is a little fast.
 */
export const OCCURRED_AT_MAX_AHEAD_HOURS = 24

/** Refuses (400 naming `field`) an event time too far ahead of `now`; the schema cannot see the service's clock. */
export function refuseFarFutureEvent(occurredAt: string, now: Date, field: string): void {
  if (Date.parse(occurredAt) - now.getTime() > OCCURRED_AT_MAX_AHEAD_HOURS * 3600_000) {
    throw new AppError('validation-failed', `${field} is more than ${OCCURRED_AT_MAX_AHEAD_HOURS} hours ahead of the service's clock`, {
      invalidParams: [{ name: field, reason: `must be at most ${OCCURRED_AT_MAX_AHEAD_HOURS} hours after the service's clock (${now.toISOString()})` }],
    })
  }
}

export const callEventSchema = z
  .object({
    eventId: z.string().min(1).max(128).describe('Unique per source: the idempotency key'),
    type: z.enum(EVENT_TYPES),
    occurredAt: instant.describe(`When CAD recorded the event (RFC 3339); at most ${OCCURRED_AT_MAX_AHEAD_HOURS} hours ahead of the service's clock`),
    call: callSchema,
  })
  .strict()
  .superRefine((e, ctx) => {
    if (e.call.disposition !== undefined && e.type !== 'call.closed') {
      ctx.addIssue({ code: 'custom', path: ['call', 'disposition'], message: 'a disposition is only accepted on call.closed' })
    }
  })
  .meta({
    id: 'CallEvent',
    description: 'One CAD event. Each carries the whole call as CAD has it now: a flag left out is false, a field left out is empty.',
    examples: [
      {
        eventId: 'hastings-cad-88412',
        type: 'call.created',
        occurredAt: '2026-11-23T15:04:05-06:00',
        call: {
          callId: 'DC26-000123',
          agency: 'hastings-pd',
          natureCode: 'WELFARE',
          priority: 2,
          location: { address: '1200 Vermillion St', city: 'Hastings', lat: 44.7433, lon: -92.8524 },
          caller: { phone: '651-555-0142', name: 'Caller Name' },
          subject: { personId: 'P-104233', name: 'Subject Name', birthDate: '1987-04-12' },
          description: 'Brother pacing, talking about not wanting to live; no weapons seen.',
          flags: { mentalHealth: true, suicidalIdeation: true },
        },
      },
    ],
  })

export type CallEvent = z.infer<typeof callEventSchema>

export const decisionSchema = z
  .object({
    id: z.string().uuid(),
    route: z.enum(ROUTES),
    assignments: z.array(assignmentSummarySchema),
    ruleSetVersion: z.number().int(),
    ruleId: z.string(),
    explanation: z.string(),
    fallback: z.object({ fromRoute: z.enum(ROUTES), reason: z.string() }).nullable(),
    override: z.object({ route: z.enum(ROUTES), overriddenRuleId: z.string() }).nullable(),
    review: z.array(z.string()),
    followUp: z.object({ queue: z.literal('follow_up'), dueWithinHours: z.number() }).nullable(),
    decidedAt: z.string(),
  })
  .meta({ id: 'Decision' })

export type DecisionView = z.infer<typeof decisionSchema>

export const callEventResultSchema = z
  .object({
    eventId: z.string(),
    callId: z.string(),
    applied: z
      .boolean()
      .describe(
        "true: the event changed the call, and `decision` is its own. false: stored for the record, but it changed nothing, and `decision` is the call's current one: " +
          'an event dated (occurredAt) before one already applied, or a call.closed for a call already closed (a corrected disposition included). ' +
          "A call's first call.closed is applied whatever its date: dated before the last applied event, it still closes the call (true), whose details stay those of that later event",
      ),
    decision: decisionSchema,
  })
  .meta({ id: 'CallEventResult' })

export type CallEventResult = z.infer<typeof callEventResultSchema>

export const traceSchema = z.array(
  z.object({
    ruleId: z.string(),
    matched: z.boolean(),
    conditions: z.array(z.object({ condition: z.string(), value: z.unknown(), result: z.boolean() })),
  }),
)

export const callViewSchema = z
  .object({
    callId: z.string(),
    agency: z.string(),
    status: z.enum(['open', 'closed']),
    natureCode: z.string(),
    priority: z.number().int(),
    route: z.enum(ROUTES),
    mentalHealth: z.boolean(),
    disposition: z.string().nullable(),
    flags: z.record(z.string(), z.boolean()),
    dispatcherOverride: z.enum(ROUTES).nullable(),
    location: z.unknown(),
    caller: z.unknown(),
    subject: z.unknown(),
    description: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    closedAt: z.string().nullable(),
    events: z.array(
      z.object({ eventId: z.string(), type: z.enum(EVENT_TYPES), occurredAt: z.string(), receivedAt: z.string(), applied: z.boolean(), decisionId: z.string().nullable() }),
    ),
    decisions: z.array(
      decisionSchema.extend({
        eventId: z.string(),
        facts: z.unknown().describe('The facts the engine saw: replaying them against the same rule-set version gives the same decision. For consoles that work only police or EMS queues, `history` is the string `[withheld]`'),
        trace: traceSchema,
      }),
    ),
    assignments: z.array(
      z.object({
        id: z.string(),
        agency: z.string().describe("The agency whose consoles work it: the call's, or, for an assignment kept when the call was handed to another agency, the one it was made for"),
        queue: z.enum(QUEUES),
        role: z.enum(ROLES),
        status: z.string(),
        disposition: z.string().nullable(),
        dueAt: z.string().nullable(),
        caseManager: z
          .string()
          .nullable()
          .describe("As in the assignment listing: for case management, the case manager it is for. `[withheld]` on a case-management assignment for consoles that work only police or EMS queues, whether it names one or not"),
        createdAt: z.string(),
        transitions: z.array(
          z.object({ from: z.string().nullable(), to: z.string(), role: z.string(), actor: z.string(), reason: z.string().nullable(), at: z.string() }),
        ),
      }),
    ),
  })
  .meta({ id: 'Call' })
