import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { CallService } from '../calls/service.js'
import { callEventResultSchema, callIdSchema, refuseFarFutureEvent } from '../calls/schemas.js'
import { readCallAs } from '../calls/view.js'
import { principalOf } from '../auth/plugin.js'
import { canActForAgency } from '../auth/principal.js'
import type { Db } from '../db/connect.js'
import type { RuleSetRegistry } from '../rule-sets/registry.js'
import { AppError } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { eidoToCallEvent } from './map-in.js'
import { callToEido } from './map-out.js'
import { eidoInSchema, eidoOutSchema } from './schemas.js'

export interface EidoRoutesOptions {
  /** The same call service as POST /v1/call-events: one ingest path, one set of guarantees. */
  calls: CallService
  db: Db
  /** The decisions' rule sets: which trace conditions are history, for consoles that may not see it. */
  ruleSets: Pick<RuleSetRegistry, 'version'>
  /** The service's clock (the call service's own): documents dated too far past it are refused. */
  now: () => Date
}

export const eidoRoutes: FastifyPluginAsyncZod<EidoRoutesOptions> = async (app, { calls, db, ruleSets, now }) => {
  app.post(
    '/v1/eido',
    {
      config: { access: ['cad'] },
      schema: {
        tags: ['eido'],
        operationId: 'postEido',
        summary: 'Post a NENA EIDO document and get the routing decision',
        description:
          'Maps the EIDO (NENA-STA-021) onto a call event and ingests it exactly like POST /v1/call-events, in the order and with the close rules described there ' +
          '(a Closed document closes the call whatever its lastUpdateTimeStamp; after it, a later document is a 409 call-closed and another Closed one changes nothing). ' +
          'The eventId is derived from the document $id and lastUpdateTimeStamp: the same document again answers 200 with the same decision; ' +
          'the same $id and lastUpdateTimeStamp with different routing content is a 409. Components the service does not read are ignored. ' +
          'Errors name the EIDO component and field, e.g. incidentComponent.incidentTypeCommonRegistryText.',
        body: eidoInSchema,
        response: {
          201: callEventResultSchema.describe('Stored and routed'),
          200: callEventResultSchema.describe('A repeat of a document already stored: the same decision'),
          ...problemResponses(400, 401, 403, 409, 413, 415, 429, 503),
        },
      },
    },
    async (req, reply) => {
      // lastUpdateTimeStamp becomes the event's occurredAt.
      refuseFarFutureEvent(req.body.lastUpdateTimeStamp, now(), 'lastUpdateTimeStamp')
      const p = principalOf(req)
      // Whether the document creates the call or updates it is not read here but decided by the
      // ingest, under the call's lock: read before it, the answer could change before the commit.
      const event = eidoToCallEvent(req.body)
      if (!canActForAgency(p, event.call.agency)) throw new AppError('forbidden', `this key may not post events for agency ${event.call.agency}`)
      const { created, result } = await calls.ingest(event, { mayTouchAgency: (a) => canActForAgency(p, a), typeByCall: true })
      return reply.status(created ? 201 : 200).send(result)
    },
  )

  app.get(
    '/v1/calls/:callId/eido',
    {
      config: { access: ['console', 'supervisor'] },
      schema: {
        tags: ['eido'],
        operationId: 'getCallEido',
        summary: 'The call as a NENA EIDO document, with the routing result',
        description:
          'Assignments appear as emergencyResourceComponent entries (pool as registry type and resource attribute, assignment status as unit status), ' +
          'the decision as a dispatch component and additional data, and dispositions with APCO disposition codes where one fits.',
        params: z.object({ callId: callIdSchema }),
        response: { 200: eidoOutSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      const view = await readCallAs(db, req, ruleSets, req.params.callId, { format: 'eido' })
      // The incident type is the code the call routes on, by the rule set that last decided it.
      const latest = view.decisions.at(-1)
      const ruleSet = latest ? await ruleSets.version(latest.ruleSetVersion) : undefined
      return callToEido(view, ruleSet?.natureCodeOf(view.agency, view.natureCode))
    },
  )
}
