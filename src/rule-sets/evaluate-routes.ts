/**
 * POST /v1/routing/evaluate: what the active (or a named) rule set would decide for a call, with
 * the facts and the trace — and no side effects: nothing is stored, queued or routed. The only
 * write is the audit record when the subject's history (a behavioral-health fact) was looked up.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { canActForAgency } from '../auth/principal.js'
import { addressKey, caseManagerFor } from '../calls/history.js'
import { callSchema, decisionSchema, traceSchema } from '../calls/schemas.js'
import { AppError, notFound } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { instant } from '../http/storable.js'
import { EVENT_TYPES, QUEUES, ROLES, type CompiledRuleSet } from '../routing/index.js'
import type { RuleSetRegistry } from './registry.js'
import { cruHoldsStoredCall, factsFor, factsSchema, historySchema, lookupHistory, inCallsOf, openCruCount } from './facts.js'
import { ruleSetVersion } from './routes.js'

const evaluateBody = z
  .object({
    call: callSchema,
    type: z.enum(EVENT_TYPES).default('call.created').describe('The event type to evaluate as'),
    version: ruleSetVersion.optional().describe('A stored rule-set version; default: the active one'),
    at: instant.optional().describe('The instant to decide at: CRU hours, and prior calls in the 30 days before it; CRU capacity, case links and whether CRU holds the call (its hours and capacity then waived, as at ingest) are as they are now. Default: now'),
    history: historySchema.optional().describe('History facts to use instead of looking them up (a what-if)'),
    cru: z.object({ available: z.boolean(), reason: z.string().max(500).nullable() }).strict().optional().describe('CRU availability to use instead of the schedule'),
  })
  .strict()

const evaluationSchema = z
  .object({
    ruleSetVersion: z.number().int(),
    ruleSetName: z.string(),
    facts: factsSchema.describe('What the engine saw; history was looked up as ingest would, unless given'),
    // The stored decision's fields, with planned assignments (no ids: nothing is stored) and what the engine derived.
    decision: decisionSchema.pick({ route: true, ruleId: true, explanation: true, fallback: true, override: true, review: true, followUp: true }).extend({
      assignments: z.array(
        z.object({
          queue: z.enum(QUEUES),
          role: z.enum(ROLES),
          caseManager: z.string().nullable().describe('For case management: the case manager it would be for (the history’s `caseManager`), as ingest stores it; null on other queues, and on a case-management assignment when the history names no case manager (no active link: a dispatcher override, or a given `history` without `caseManager`)'),
        }),
      ),
      derived: z.object({ natureCode: z.string(), unknownNatureCode: z.boolean(), mentalHealthIndicator: z.boolean(), frequentCaller: z.boolean() }),
    }),
    trace: traceSchema,
  })
  .meta({ id: 'Evaluation' })

export async function ruleSetOrNotFound(ruleSets: RuleSetRegistry, version: number | undefined): Promise<CompiledRuleSet> {
  if (version === undefined) return ruleSets.active()
  const found = await ruleSets.version(version)
  if (!found) throw notFound(`rule set version ${version}`)
  return found
}

export const evaluateRoutes: FastifyPluginAsyncZod<{ db: Db; ruleSets: RuleSetRegistry; now: () => Date }> = async (app, { db, ruleSets, now }) => {
  app.post(
    '/v1/routing/evaluate',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['routing'],
        operationId: 'evaluateCall',
        summary: 'Evaluate a call against the active or a named rule-set version, without side effects',
        description:
          'Takes the `call` of a call event and answers the decision, the facts and the trace. Nothing is stored, queued or routed; ' +
          'when the subject history is looked up (no `history` given and a personId or address present) the read is audited. ' +
          'A key limited to some agencies looks up the history of a `subject.personId` only when a call of its agencies names that person, and of a `location.address` only when a call of its agencies is at that address (403 otherwise, and the refusal is audited): ' +
          'the history of anyone or anywhere else is county-wide data, like the case links.',
        body: evaluateBody,
        response: { 200: evaluationSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      const p = principalOf(req)
      const { call } = req.body
      if (!canActForAgency(p, call.agency)) throw new AppError('forbidden', `this key may not evaluate calls for agency ${call.agency}`)
      const ruleSet = await ruleSetOrNotFound(ruleSets, req.body.version)
      const at = req.body.at ? new Date(req.body.at) : now()
      const looksUp = req.body.history === undefined && (call.subject?.personId !== undefined || call.location?.address !== undefined)
      const personId = req.body.history === undefined ? call.subject?.personId : undefined
      const address = req.body.history === undefined ? (addressKey(call.location) ?? undefined) : undefined
      if (personId !== undefined && p.agencies !== null && !(await inCallsOf(db, { personId }, p.agencies))) {
        // Nothing was read, but a key trying person ids is what an auditor looks for.
        await audit(db, req, { action: 'routing.evaluate.refused', targetType: 'person', targetId: personId, agency: call.agency, details: { reason: 'no call of the key\'s agencies names the person' } })
        throw new AppError('forbidden', 'this key may look up the history of a person only when a call of its agencies names them: give `history`, leave out `subject.personId`, or use a key without an agency scope')
      }
      // How often 911 was called from a home is as much another agency's data as a person's calls.
      // Audited without the address: its key is an unsalted hash of it, personal data the scrub
      // clears from calls, and the audit log is never scrubbed.
      if (address !== undefined && p.agencies !== null && !(await inCallsOf(db, { addressKey: address }, p.agencies))) {
        await audit(db, req, { action: 'routing.evaluate.refused', targetType: 'address', targetId: null, agency: call.agency, details: { reason: 'no call of the key\'s agencies is at the address' } })
        throw new AppError('forbidden', 'this key may look up the history of an address only when a call of its agencies is there: give `history`, leave out `location.address`, or use a key without an agency scope')
      }
      const history = req.body.history ?? (await lookupHistory(db, call, at))
      if (looksUp) {
        await audit(db, req, { action: 'routing.evaluate', targetType: 'person', targetId: call.subject?.personId ?? null, agency: call.agency, details: { ruleSetVersion: ruleSet.version, addressLookedUp: address !== undefined } })
      }
      // CRU availability as ingest would see it (schedule and capacity, waived for a call CRU holds), unless given.
      const cru = req.body.cru
        ? { cru: req.body.cru }
        : { openCru: await openCruCount(db, ruleSet, call), cruHoldsCall: await cruHoldsStoredCall(db, call.callId, (a) => canActForAgency(p, a)) }
      const facts = factsFor(ruleSet, { eventType: req.body.type, call, at, history, ...cru })
      const d = ruleSet.decide(facts)
      return {
        ruleSetVersion: ruleSet.version,
        ruleSetName: ruleSet.name,
        facts,
        decision: {
          route: d.route,
          assignments: d.assignments.map((a) => ({ ...a, caseManager: caseManagerFor(a.queue, facts.history) })),
          ruleId: d.ruleId,
          explanation: d.explanation,
          fallback: d.fallback,
          override: d.override,
          review: d.review,
          followUp: d.followUp,
          derived: d.derived,
        },
        trace: d.trace,
      }
    },
  )
}
