import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { AppError } from '../http/errors.js'
import { principalOf } from '../auth/plugin.js'
import { canActForAgency } from '../auth/principal.js'
import { problemResponses } from '../http/openapi.js'
import type { Db } from '../db/connect.js'
import type { RuleSetRegistry } from '../rule-sets/registry.js'
import { callEventResultSchema, callEventSchema, callIdSchema, callViewSchema, refuseFarFutureEvent } from './schemas.js'
import type { CallService } from './service.js'
import { readCallAs } from './view.js'

export interface CallRoutesOptions {
  calls: CallService
  db: Db
  /** The decisions' rule sets: which trace conditions are history, for consoles that may not see it. */
  ruleSets: Pick<RuleSetRegistry, 'version'>
  /** The service's clock (the call service's own): events dated too far past it are refused. */
  now: () => Date
}

export const callRoutes: FastifyPluginAsyncZod<CallRoutesOptions> = async (app, { calls, db, ruleSets, now }) => {
  app.post(
    '/v1/call-events',
    {
      config: { access: ['cad'] },
      schema: {
        tags: ['calls'],
        operationId: 'postCallEvent',
        summary: 'Post a call event from CAD and get the routing decision',
        description:
          'Stores the event, routes the call and queues its assignments in one transaction. ' +
          'The first post of an eventId answers 201; a repeat with the same body answers 200 with the same decision and writes nothing ' +
          '(keys in any order; occurredAt compared as an instant, so `-06:00` and `Z` spellings of one time are the same body; a flag left out is false, so an event stored before a release added a flag is the same body as its retry after it); ' +
          'the same eventId with a different body is a 409. ' +
          "A call's events apply in occurredAt order: one dated before an event already applied is stored and answered 201 with applied: false and the call's current decision, and changes nothing. " +
          "The exception is the call's first call.closed, the end of the incident: dated before the last applied event (a CAD position's clock a second or two behind), it still closes the call " +
          "(applied: true: open assignments cancelled, follow-up made, disposition recorded), and the call keeps the details of the later event. " +
          'A closed call is never re-opened: a call.created or call.updated dated after the close (after the later event whose details a late-closed call kept) is refused with 409 call-closed and not stored (a new incident needs a new callId), one dated before that is applied: false, ' +
          "and a second call.closed, a corrected disposition included, is stored with applied: false and changes nothing (the first close's disposition and follow-up stay).",
        body: callEventSchema,
        response: {
          201: callEventResultSchema.describe('Stored and routed'),
          200: callEventResultSchema.describe('A repeat of an event already stored: the same decision'),
          ...problemResponses(400, 401, 403, 409, 413, 415, 429, 503),
        },
      },
    },
    async (req, reply) => {
      refuseFarFutureEvent(req.body.occurredAt, now(), 'occurredAt')
      const p = principalOf(req)
      if (!canActForAgency(p, req.body.call.agency)) throw new AppError('forbidden', `this key may not post events for agency ${req.body.call.agency}`)
      const { created, result } = await calls.ingest(req.body, { mayTouchAgency: (a) => canActForAgency(p, a) })
      return reply.status(created ? 201 : 200).send(result)
    },
  )

  app.get(
    '/v1/calls/:callId',
    {
      config: { access: ['console', 'supervisor'] },
      schema: {
        tags: ['calls'],
        operationId: 'getCall',
        summary: 'A call with its events, decisions (facts, explanation and trace) and assignments',
        params: z.object({ callId: callIdSchema }),
        description:
          'Reading a call reads its personal data: every read is recorded in the audit log. A console narrowed to some queues reads a call only when its agency has an assignment on it in one of them (404 otherwise, as for an unknown id); an agency that keeps an assignment on a call handed to another agency still reads it, and the audit record of such a read says so (details `via: assignment` and the reading `agency`; the record’s own agency stays the call’s). Consoles that work only police or EMS queues do not see the behavioral-health history behind a decision: each decision’s `facts.history` reads `"[withheld]"` (a string, not the object), a trace rule that tested a history fact keeps its `ruleId` and `matched` with `conditions: []`, every transition `reason` of a CRU, case-management or follow-up assignment reads `"[withheld]"`, and so does a case-management assignment’s `caseManager`, whether it names one or not.',
        response: { 200: callViewSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => readCallAs(db, req, ruleSets, req.params.callId),
  )
}
