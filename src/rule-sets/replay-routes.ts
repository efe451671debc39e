/**
 * Supervisors try a rule-set version on past calls (replay) and on live calls (shadow mode) before
 * it goes live. Counts, codes and routes only: no personal data leaves here. Keys limited to some
 * agencies see only their agencies' calls.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { sql } from 'kysely'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { reportAgencies, requireCountyWide } from '../auth/principal.js'
import { AppError, notFound } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { instant } from '../http/storable.js'
import { ROUTES } from '../routing/index.js'
import { ruleSetOrNotFound } from './evaluate-routes.js'
import type { RuleSetRegistry } from './registry.js'
import { createReplay } from './replay.js'
import { ruleSetVersion, ruleSetVersionParam } from './routes.js'
import { storedDecisions } from './replay-repository.js'
import { activeVersion, RULE_SET_LOCK } from './repository.js'
import { shadowReport, type ShadowSource } from './shadow.js'

const DAY_MS = 24 * 3600_000
const MAX_RANGE_DAYS = 400

const versionParams = z.object({ version: ruleSetVersionParam.describe('A stored rule-set version') }).strict()
const routeEnum = z.enum(ROUTES)
const rateSchema = z.number().min(0).max(1).nullable()
const mixSchema = z.object({ police: z.number().int(), cru: z.number().int(), co_response: z.number().int(), ems: z.number().int(), case_manager: z.number().int() })

const figuresSchema = z.object({
  ruleSetVersion: z.number().int(),
  ruleSetName: z.string(),
  calls: z.number().int(),
  routeMix: mixSchema,
  mentalHealthCalls: z.number().int(),
  capture: z.object({ captured: z.number().int(), rate: rateSchema }).describe('Mental-health calls routed to CRU or a case manager'),
  diversion: z.object({ withoutPolice: z.number().int(), rate: rateSchema }).describe('Projected: mental-health calls whose decision assigns no police'),
  fallbacks: z.number().int(),
  overrides: z.number().int(),
  review: z.number().int(),
})

const movesSchema = z.array(z.object({ from: routeEnum, to: routeEnum, count: z.number().int() }))

const replayReportSchema = z
  .object({
    from: z.string(),
    to: z.string(),
    candidate: figuresSchema,
    baseline: figuresSchema.nullable(),
    changes: z
      .object({
        total: z.number().int(),
        byNatureCode: z.array(z.object({ natureCode: z.string(), changed: z.number().int(), moves: movesSchema })),
        calls: z.array(
          z.object({ callId: z.string(), natureCode: z.string(), agency: z.string(), from: routeEnum, to: routeEnum, fromRuleId: z.string(), toRuleId: z.string() }),
        ),
        truncated: z.boolean(),
      })
      .nullable(),
  })
  .meta({ id: 'ReplayReport' })

const replayBody = z
  .object({
    from: instant.describe('Calls first seen from (inclusive)'),
    to: instant.describe('Calls first seen before (exclusive)'),
    against: ruleSetVersion.optional().describe('A second version to compare with: the calls whose route changes, by nature code'),
    agency: z.string().min(1).max(64).optional().describe('Only this agency'),
    changeLimit: z.number().int().min(0).max(1000).default(200).describe('How many changed calls to list (the counts cover them all)'),
  })
  .strict()

const shadowSettingSchema = z
  .object({ version: z.number().int(), name: z.string(), setBy: z.string(), reason: z.string().nullable(), setAt: z.string() })
  .meta({ id: 'ShadowSetting' })

const shadowReportSchema = z
  .object({
    shadowVersion: z.number().int().nullable(),
    from: z.string(),
    to: z.string(),
    decisions: z.number().int().describe('Live routing decisions evaluated by the shadow (closing events excluded)'),
    calls: z.number().int(),
    changed: z.number().int().describe('Decisions whose route the shadow would have changed'),
    changedCalls: z.number().int(),
    liveRouteMix: mixSchema,
    shadowRouteMix: mixSchema,
    byNatureCode: z.array(z.object({ natureCode: z.string(), decisions: z.number().int(), changed: z.number().int(), moves: movesSchema })),
  })
  .meta({ id: 'ShadowReport' })

/** `part`: where `from` and `to` were given, the prefix of their names in a problem (`querystring.from`); none for the body. */
function parseRange(fromText: string | undefined, toText: string | undefined, now: Date, part: '' | 'querystring'): { from: Date; to: Date } {
  const to = toText ? new Date(toText) : now
  const from = fromText ? new Date(fromText) : new Date(to.getTime() - 30 * DAY_MS)
  const name = part ? `${part}.from` : 'from'
  if (from >= to) throw new AppError('validation-failed', '`from` must be before `to`', { invalidParams: [{ name, reason: 'must be before to' }] })
  if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * DAY_MS) {
    throw new AppError('validation-failed', `the range is longer than ${MAX_RANGE_DAYS} days`, { invalidParams: [{ name, reason: `at most ${MAX_RANGE_DAYS} days before to` }] })
  }
  return { from, to }
}

export const replayRoutes: FastifyPluginAsyncZod<{ db: Db; ruleSets: RuleSetRegistry; shadow: ShadowSource; now: () => Date }> = async (app, { db, ruleSets, shadow, now }) => {
  app.post(
    '/v1/rule-sets/:version/replay',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['replay'],
        operationId: 'replayRuleSet',
        summary: 'Replay stored calls of a time range against a rule-set version (optionally compared with another)',
        description:
          'Each call first seen in the range is decided again from the facts stored with its latest routing decision, so the report is reproducible; ' +
          'CRU hours are each version’s own (CRU at capacity stays at capacity). ' +
          'Reports the route mix, the capture rate (mental-health calls reaching CRU or a case manager) and the projected diversion ' +
          '(mental-health calls with no police assignment); with `against`, the calls whose route changes, grouped by nature code. ' +
          'Dispatcher overrides stored with a call stay overrides. Writes nothing.',
        params: versionParams,
        body: replayBody,
        response: { 200: replayReportSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      const p = principalOf(req)
      const candidate = await ruleSetOrNotFound(ruleSets, req.params.version)
      const against = req.body.against === undefined ? null : await ruleSetOrNotFound(ruleSets, req.body.against)
      const { from, to } = parseRange(req.body.from, req.body.to, now(), '')
      const run = createReplay(candidate, against, { changeLimit: req.body.changeLimit })
      for await (const item of storedDecisions(db, { from, to, agencies: reportAgencies(p, req.body.agency) })) run.add(item)
      return { from: from.toISOString(), to: to.toISOString(), ...run.report() }
    },
  )

  app.get(
    '/v1/rule-sets/shadow',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['replay'],
        operationId: 'getShadowRuleSet',
        summary: 'The rule-set version in shadow mode, if any',
        querystring: z.object({}).strict(),
        response: { 200: shadowSettingSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async () => {
      const s = await shadow.setting()
      if (!s) throw notFound('shadow rule set')
      return s
    },
  )

  app.put(
    '/v1/rule-sets/:version/shadow',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['replay'],
        operationId: 'setShadowRuleSet',
        summary: 'Put a rule-set version in shadow mode (replacing any other)',
        description:
          'From now on every live call is also decided by this version, on the same facts with its own CRU hours; the difference is stored and summarised by ' +
          '`GET /v1/rule-sets/shadow/report`. It never changes a live decision. Other instances follow within a second. Audited.',
        params: versionParams,
        body: z.object({ reason: z.string().min(1).max(500).optional() }).strict().nullish(),
        response: { 200: shadowSettingSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      const p = principalOf(req)
      // Shadow mode decides every agency's calls a second time.
      requireCountyWide(p, 'shadow mode is')
      const { version } = req.params
      await ruleSetOrNotFound(ruleSets, version)
      const setting = await db.transaction().execute(async (trx) => {
        // Asked of the database under the activations' lock, not of this instance's registry: a
        // version another instance has just activated would otherwise become the shadow of itself,
        // and resume, stale, beside the next version activated (an activation ends only its own).
        await sql`select pg_advisory_xact_lock(${RULE_SET_LOCK})`.execute(trx)
        if ((await activeVersion(trx)) === version) {
          throw new AppError('validation-failed', `version ${version} is the active rule set: shadow a candidate`, { invalidParams: [{ name: 'params.version', reason: 'is the active version' }] })
        }
        const reason = req.body?.reason ?? null
        const s = await shadow.set(trx, version, p.name, reason)
        await audit(trx, req, { action: 'rule-set.shadow.set', targetType: 'rule_set', targetId: String(version), details: { reason } })
        return s
      })
      await shadow.refresh()
      return setting
    },
  )

  app.delete(
    '/v1/rule-sets/:version/shadow',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['replay'],
        operationId: 'clearShadowRuleSet',
        summary: 'End shadow mode for this version',
        description: 'The stored differences stay for the report. Audited.',
        params: versionParams,
        response: { 204: z.null().describe('Shadow mode ended'), ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req, reply) => {
      requireCountyWide(principalOf(req), 'shadow mode is')
      const { version } = req.params
      const cleared = await db.transaction().execute(async (trx) => {
        const done = await shadow.clear(trx, version)
        if (done) await audit(trx, req, { action: 'rule-set.shadow.clear', targetType: 'rule_set', targetId: String(version) })
        return done
      })
      if (!cleared) throw notFound(`shadow mode for version ${version}`)
      await shadow.refresh()
      return reply.status(204).send(null)
    },
  )

  app.get(
    '/v1/rule-sets/shadow/report',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['replay'],
        operationId: 'getShadowReport',
        summary: 'How the shadow version’s decisions differ from the live ones',
        description: 'Live routing decisions made in the range (closing events excluded), the route mixes of both, and the route changes by nature code.',
        querystring: z
          .object({
            from: instant.optional().describe('Default: 30 days before `to`'),
            to: instant.optional().describe('Default: now'),
            version: ruleSetVersionParam.optional().describe('Only this shadow version; default: the current one (or every one, when none is set)'),
            agency: z.string().min(1).max(64).optional(),
          })
          .strict(),
        response: { 200: shadowReportSchema, ...problemResponses(400, 401, 403, 429, 503) },
      },
    },
    async (req) => {
      const p = principalOf(req)
      const { from, to } = parseRange(req.query.from, req.query.to, now(), 'querystring')
      const version = req.query.version ?? (await shadow.setting())?.version ?? null
      return shadowReport(db, { from, to, agencies: reportAgencies(p, req.query.agency), version })
    },
  )
}
