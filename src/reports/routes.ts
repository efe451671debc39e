import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { canActForAgency, reportAgencies } from '../auth/principal.js'
import { principalOf } from '../auth/plugin.js'
import { AppError } from '../http/errors.js'
import { preferredType } from '../http/accept.js'
import { problemResponses, VARY_ACCEPT } from '../http/openapi.js'
import { instant } from '../http/storable.js'
import { QUEUES } from '../routing/index.js'
import { ESCALATION_CAUSES, ESCALATION_STATUSES, overdueFollowUps, queueDepths } from './repository.js'
import { buildSummary, summaryCsv, summaryCsvExample } from './summary.js'

const DAY_MS = 24 * 3600_000
const MAX_RANGE_DAYS = 400

/** IANA names this Node knows (canonical ones, and UTC); not offsets, which Postgres reads with the sign turned (POSIX). */
const TIME_ZONES = new Set([...Intl.supportedValuesOf('timeZone'), 'UTC'])

const summaryQuery = z
  .object({
    from: instant.optional().describe('Start of the range (inclusive); default: 30 days before `to`'),
    to: instant.optional().describe('End of the range (exclusive); default: now'),
    bucket: z.enum(['day', 'week']).default('day').describe('Series buckets, the days (or weeks, from Monday) of `timeZone`'),
    timeZone: z
      .string()
      .max(64)
      .default('UTC')
      .refine((zone) => TIME_ZONES.has(zone), 'an IANA time zone, such as America/Chicago')
      .describe('The zone whose midnights start the buckets, across daylight saving time (an IANA name, such as America/Chicago); default UTC'),
    agency: z.string().min(1).max(64).optional().describe('Only this agency'),
    repeatThreshold: z.coerce.number().int().min(2).max(100).default(3).describe('Repeat callers: subjects with at least this many calls in the 30 days before `to`'),
  })
  .strict()

const rateSchema = z.number().min(0).max(1).nullable().describe('A share from 0 to 1; null when there is nothing to divide by')
const ackSchema = z.object({ acknowledged: z.number().int(), p50Seconds: z.number().nullable(), p90Seconds: z.number().nullable() })
const cellSchema = z.object({
  agency: z.string().nullable().describe('null: all agencies'),
  bucketStart: z.string().nullable().describe('null: the whole range'),
  calls: z.number().int(),
  mentalHealthCalls: z.number().int(),
  diversion: z
    .object({ closedMentalHealthCalls: z.number().int(), withoutPoliceFieldResponse: z.number().int(), rate: rateSchema })
    .describe('Closed mental-health calls with no police assignment ever accepted'),
  capture: z
    .object({
      eligible: z.number().int().describe('Mental-health calls DESIGN rule 1 does not govern: no safety flag (weapons, violence, threat to others, crime in progress), no safety nature code after the agency\'s map, and neither the rule that fired nor one a dispatcher overrode is a principle-1 rule'),
      captured: z.number().int().describe('Routed to CRU or a case manager, and not taken over by police through escalation (a case manager\'s call handed to CRU stays captured)'),
      rate: rateSchema,
      toPolice: z.object({ fallback: z.number().int(), override: z.number().int(), escalation: z.number().int() }).describe('Eligible calls that went to police, by reason; `escalation`: a police primary made by escalating another queue\'s assignment (its deadline passed, or it was declined)'),
      otherRoute: z.number().int().describe('Eligible calls routed otherwise (co-response, EMS, police by rule)'),
    }),
  routeMix: z.object({ police: z.number().int(), cru: z.number().int(), co_response: z.number().int(), ems: z.number().int(), case_manager: z.number().int() }),
  coResponseShare: rateSchema,
  escalations: z
    .object({
      total: z.number().int(),
      causes: z.array(
        z.object({
          status: z.enum(ESCALATION_STATUSES).describe('escalated: not acknowledged in time, handed along the fallback; expired: not acknowledged in time, offered again in the same queue; declined: by its responder, handed along or offered again at once'),
          reason: z
            .enum(ESCALATION_CAUSES)
            .describe(
              'The cause, derived from the reason stored on the move (which also says when and what followed): not acknowledged in time (its deadline passed), ' +
                'declined (by its responder; the responder’s words are never shown), not recorded (no reason stored), other (a reason of another form).',
            ),
          count: z.number().int(),
        }),
      ),
    })
    .describe('Transitions to escalated, expired or declined in the range, by status and cause'),
  timeToAcknowledge: z.record(z.enum(QUEUES), ackSchema).describe('Per queue: creation to first acknowledge (or accept), assignments created in the range; a follow-up from the end of its reservation, when it is offered'),
  cruPhoneResolution: z.object({ closedCruCalls: z.number().int(), resolvedByPhone: z.number().int(), share: rateSchema }),
  followUps: z.object({
    created: z.number().int().describe('Follow-ups first offered in the range, each counted once: one declined or not acknowledged is offered again as a new assignment, and stays one follow-up'),
    completedOnTime: z.number().int().describe('Completed by the due time (72 h after the call closed, by default), by any of its offers'),
    overdue: z.number().int().describe('Still open past the due time, now, whichever of its offers holds it'),
  }),
})
const repeatSchema = z.object({ threshold: z.number().int(), windowDays: z.literal(30), subjects: z.number().int(), calls: z.number().int() })
const summarySchema = z.object({
  from: z.string(),
  to: z.string(),
  bucket: z.enum(['day', 'week']),
  timeZone: z.string().describe('The zone whose days and weeks the buckets are'),
  generatedAt: z.string(),
  overall: cellSchema.extend({ repeatCallers: repeatSchema }),
  byAgency: z.array(cellSchema.extend({ repeatCallers: repeatSchema })),
  series: z.array(cellSchema),
  seriesByAgency: z.array(cellSchema),
})

const summaryCsvSchema = z.string().meta({
  description:
    'The same cells as CSV (RFC 4180, CRLF line ends, UTF-8), a header line then one row per cell: overall, per agency, per bucket, per agency per bucket. ' +
    '`agency` and `bucket_start` are "all" for the cells across agencies or the whole range; an empty field is a null (a share with nothing to divide by); ' +
    '`escalations` is the total of the causes (which only JSON lists), and the repeat-caller columns are filled on whole-range rows only. ' +
    'A text field that would start with =, +, - or @ is prefixed with an apostrophe, so a spreadsheet never runs it as a formula.',
  examples: [summaryCsvExample()],
})

const queuesSchema = z.object({
  asOf: z.string(),
  queues: z.array(
    z.object({
      queue: z.enum(QUEUES),
      waiting: z.number().int().describe('Assignments of the queue that are queued, offered or reserved (a follow-up before its reservedUntil counts too)'),
      oldestAgeSeconds: z
        .number()
        .nullable()
        .describe(
          'How long the longest-waiting of them has waited, in whole seconds: from its creation, or for a follow-up from its reservedUntil (0 while it is reserved, and counted from then once offered). Null when nothing waits (the `cad_router_queue_oldest_age_seconds` metric, in fractional seconds, reads 0 then)',
        ),
      byAgency: z.array(z.object({ agency: z.string(), waiting: z.number().int() })),
    }),
  ),
  overdueFollowUps: z.object({ total: z.number().int(), byAgency: z.array(z.object({ agency: z.string(), overdue: z.number().int() })) }),
})

/**
 * Supervisor reports (supervisor and admin keys). Counts only: no personal data leaves here.
 */
export const reportRoutes: FastifyPluginAsyncZod<{ db: Db; now: () => Date }> = async (app, { db, now }) => {
  app.get(
    '/v1/reports/summary',
    {
      config: { access: ['supervisor'], responseHeaders: { 200: VARY_ACCEPT } },
      schema: {
        tags: ['reports'],
        operationId: 'getReportSummary',
        summary: 'Diversion, capture, route mix, escalations, acknowledge times, follow-ups and repeat callers',
        description:
          'Per agency and overall, for the whole range and per day or week. Calls are placed in time by when the service first saw them. ' +
          'Send `Accept: text/csv` for one CSV row per cell (agency or "all" × bucket start or "all"). ' +
          'A key limited to some agencies sees those only ("all" then means all of them); an `agency` outside its scope is 403.',
        querystring: summaryQuery,
        response: {
          200: {
            description: 'The report: JSON, or CSV with `Accept: text/csv`',
            content: { 'application/json': { schema: summarySchema }, 'text/csv': { schema: summaryCsvSchema } },
          },
          ...problemResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async (req, reply) => {
      const asOf = now()
      const to = req.query.to ? new Date(req.query.to) : asOf
      const from = req.query.from ? new Date(req.query.from) : new Date(to.getTime() - 30 * DAY_MS)
      if (from >= to) throw new AppError('validation-failed', '`from` must be before `to`', { invalidParams: [{ name: 'querystring.from', reason: 'must be before to' }] })
      if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * DAY_MS) {
        throw new AppError('validation-failed', `the range is longer than ${MAX_RANGE_DAYS} days`, { invalidParams: [{ name: 'querystring.from', reason: `at most ${MAX_RANGE_DAYS} days before to` }] })
      }
      const summary = await buildSummary(db, { from, to, bucket: req.query.bucket, timeZone: req.query.timeZone, agencies: reportAgencies(principalOf(req), req.query.agency) ?? undefined }, { asOf, repeatThreshold: req.query.repeatThreshold })
      reply.header('vary', 'accept')
      // Fastify sends a string under a non-JSON type as it is: the CSV text is never JSON-encoded.
      if (preferredType(req.headers.accept, ['application/json', 'text/csv']) === 'text/csv') return reply.type('text/csv; charset=utf-8').send(summaryCsv(summary))
      return summary
    },
  )

  app.get(
    '/v1/reports/queues',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['reports'],
        operationId: 'getQueueStatus',
        summary: 'What waits in each queue now (depth, oldest age) and overdue follow-ups',
        description: 'Read from Postgres at the time of the request. A key limited to some agencies sees only theirs, in the counts and the ages alike.',
        // No parameters: an unknown one is refused (400) rather than ignored.
        querystring: z.object({}).strict(),
        response: { 200: queuesSchema, ...problemResponses(400, 401, 403, 429, 503) },
      },
    },
    async (req) => {
      const asOf = now()
      const p = principalOf(req)
      // A supervisor of some agencies sees their queues only.
      const [allDepths, allOverdue] = await Promise.all([queueDepths(db), overdueFollowUps(db, asOf)])
      const depths = allDepths.filter((r) => canActForAgency(p, r.agency))
      const overdue = allOverdue.filter((r) => canActForAgency(p, r.agency))
      return {
        asOf: asOf.toISOString(),
        queues: QUEUES.map((queue) => {
          const rows = depths.filter((d) => d.queue === queue)
          const oldest = rows.reduce<Date | null>((m, r) => (r.oldestWaitingSince && (!m || r.oldestWaitingSince < m) ? r.oldestWaitingSince : m), null)
          return {
            queue,
            waiting: rows.reduce((s, r) => s + r.waiting, 0),
            oldestAgeSeconds: oldest ? Math.max(0, Math.round((asOf.getTime() - oldest.getTime()) / 1000)) : null,
            byAgency: rows.map((r) => ({ agency: r.agency, waiting: r.waiting })).sort((a, b) => a.agency.localeCompare(b.agency)),
          }
        }),
        overdueFollowUps: { total: overdue.reduce((s, r) => s + r.overdue, 0), byAgency: overdue.sort((a, b) => a.agency.localeCompare(b.agency)) },
      }
    },
  )
}
