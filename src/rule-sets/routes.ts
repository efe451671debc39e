import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { principalOf } from '../auth/plugin.js'
import { requireCountyWide } from '../auth/principal.js'
import type { Db } from '../db/connect.js'
import { preferredType } from '../http/accept.js'
import { notFound } from '../http/errors.js'
import { problemResponses, VARY_ACCEPT } from '../http/openapi.js'
import { PG_INTEGER_MAX } from '../http/storable.js'
import { FINDING_KINDS, FLAG_NAMES, formatReportWithCoverage, ROUTES, ruleSetSchema } from '../routing/index.js'
import type { RuleSetLifecycle } from './lifecycle.js'
import { findRuleSet, listActivations, listRuleSets, type RuleSetSummaryRow } from './repository.js'

const STATUSES = ['draft', 'active', 'retired'] as const

const summarySchema = z.object({
  version: z.number().int(),
  name: z.string(),
  status: z.enum(STATUSES).describe('draft: stored, never active; active: routes live calls (exactly one); retired: was active'),
  createdAt: z.string(),
  createdBy: z.string(),
  activatedAt: z.string().nullable().describe('When it last became active'),
})

const findingSchema = z.object({
  kind: z.enum(FINDING_KINDS),
  message: z.string(),
  path: z.string().optional(),
  ruleId: z.string().optional(),
  examples: z.array(z.string()).optional().describe('Calls (classes of the fact space) that show the problem'),
})

const flagList = z.array(z.enum(FLAG_NAMES))
const reportSchema = z
  .object({
    ok: z.boolean(),
    version: z.number().int().nullable(),
    findings: z.array(findingSchema),
    coverage: z.array(
      z.object({
        route: z.enum(ROUTES),
        factClasses: z.number().int(),
        natureCodes: z.array(z.string()),
        rules: z.array(
          z.object({
            ruleId: z.string(),
            fallback: z.boolean().describe('The rule’s CRU fallback (DESIGN rule 7) gave this route'),
            factClasses: z.number().int(),
            natureCodes: z.array(z.string()),
            unlistedNatureCodes: z.boolean().describe('Nature codes the rule set does not list reach it too'),
            flagsAlways: flagList.describe('Set in every flag combination that reaches it'),
            flagsNever: flagList.describe('Set in none'),
            flagCombinations: z.number().int(),
          }),
        ),
      }),
    ),
    factSpace: z
      .object({ classes: z.number().int(), natureCodeClasses: z.number().int(), agencyClasses: z.number().int(), flags: flagList })
      .nullable()
      .describe('The enumerated fact space the invariants were proven over'),
  })
  .meta({ id: 'RuleSetVerification', description: 'Schema and semantic findings, safety invariants proven over the whole fact space, and per-route coverage' })

const activationSchema = z.object({
  kind: z.enum(['initial', 'activate', 'rollback']),
  fromVersion: z.number().int().nullable(),
  toVersion: z.number().int(),
  at: z.string(),
  actor: z.string(),
  reason: z.string(),
})

const reasonBody = z.object({ reason: z.string().trim().min(3).max(1000).describe('Why: kept in the activation history and the audit log') }).strict()
/** A stored rule-set version, in a body: rule_sets.version is a Postgres integer, so a larger number is a 400, not a 500. */
export const ruleSetVersion = z.number().int().positive().max(PG_INTEGER_MAX)
/** The same, as a path or query parameter (text, coerced). */
export const ruleSetVersionParam = z.coerce.number().int().positive().max(PG_INTEGER_MAX)
const versionParams = z.object({ version: ruleSetVersionParam })

const summary = (r: RuleSetSummaryRow) => ({
  version: r.version,
  name: r.name,
  status: r.status,
  createdAt: r.created_at.toISOString(),
  createdBy: r.created_by,
  activatedAt: r.activated_at?.toISOString() ?? null,
})


export const ruleSetRoutes: FastifyPluginAsyncZod<{ db: Db; lifecycle: RuleSetLifecycle }> = async (app, { db, lifecycle }) => {
  app.post(
    '/v1/rule-sets',
    {
      config: { access: ['supervisor'] },
      // The body is verified by the handler, so that every problem — schema or semantic — comes
      // back in one readable report (422) rather than as a 400 of the schema alone.
      attachValidation: true,
      schema: {
        tags: ['rule-sets'],
        operationId: 'createRuleSet',
        summary: 'Store a new rule-set version as a draft (after verification)',
        description:
          'The body is a rule-set document (schema RuleSet). Its `version` must be above every stored version (409 `rule-set-conflict` names the next one). ' +
          'The document is verified first: schema, unknown queues or routes, duplicate rule ids, the default rule, shadowed rules, and the safety invariants ' +
          'proven over the whole fact space. A failure answers 422 `verification-failed` with the readable report in `detail` and each finding in `findings`. ' +
          'A county-wide supervisor (or admin) key is required.',
        body: ruleSetSchema,
        response: { 201: summarySchema.extend({ verification: reportSchema }), ...problemResponses(401, 403, 409, 413, 415, 422, 429, 503) },
      },
    },
    async (req, reply) => {
      requireCountyWide(principalOf(req), 'rule sets are')
      const { row, report: r } = await lifecycle.createDraft(req, req.body)
      return reply.status(201).send({ ...summary(row), verification: r })
    },
  )

  app.get(
    '/v1/rule-sets',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['rule-sets'],
        operationId: 'listRuleSets',
        summary: 'Every stored version (newest first) and the activation history',
        querystring: z.object({}).strict(),
        response: {
          200: z.object({ activeVersion: z.number().int().nullable(), ruleSets: z.array(summarySchema), activations: z.array(activationSchema).describe('Newest first (the last 100)') }),
          ...problemResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async () => {
      const [rows, activations] = await Promise.all([listRuleSets(db), listActivations(db)])
      return {
        activeVersion: rows.find((r) => r.status === 'active')?.version ?? null,
        ruleSets: rows.map(summary),
        activations: activations.map((a) => ({ kind: a.kind, fromVersion: a.from_version, toVersion: a.to_version, at: a.at.toISOString(), actor: a.actor, reason: a.reason })),
      }
    },
  )

  app.get(
    '/v1/rule-sets/:version',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['rule-sets'],
        operationId: 'getRuleSet',
        summary: 'One version: its status and document',
        params: versionParams,
        response: { 200: summarySchema.extend({ document: ruleSetSchema }), ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      const row = await findRuleSet(db, req.params.version)
      if (!row) throw notFound(`rule set ${req.params.version}`)
      // Stored documents passed verification; the cast only names their type.
      return { ...summary(row), document: row.document as z.infer<typeof ruleSetSchema> }
    },
  )

  app.get(
    '/v1/rule-sets/:version/verification',
    {
      config: { access: ['supervisor'], responseHeaders: { 200: VARY_ACCEPT } },
      schema: {
        tags: ['rule-sets'],
        operationId: 'getRuleSetVerification',
        summary: 'The verification report of a stored version, with its coverage (which nature codes and flags reach each route)',
        description: 'Send `Accept: text/plain` for the report and its coverage as readable text.',
        params: versionParams,
        response: {
          200: {
            description: 'The report: JSON, or text with `Accept: text/plain`',
            content: { 'application/json': { schema: reportSchema }, 'text/plain': { schema: z.string().describe('The report and its coverage, as readable text') } },
          },
          ...problemResponses(400, 401, 403, 404, 429, 503),
        },
      },
    },
    async (req, reply) => {
      const r = await lifecycle.verification(req.params.version)
      if (!r) throw notFound(`rule set ${req.params.version}`)
      reply.header('vary', 'accept')
      if (preferredType(req.headers.accept, ['application/json', 'text/plain']) === 'text/plain') {
        // The JSON schema's serializer does not apply to text; the cast only satisfies the route's JSON reply type.
        return reply.type('text/plain; charset=utf-8').serializer((x: unknown) => x as string).send(formatReportWithCoverage(r) as unknown as typeof r)
      }
      return r
    },
  )

  const activationResponse = z.object({ fromVersion: z.number().int().nullable(), toVersion: z.number().int(), kind: z.enum(['activate', 'rollback']), at: z.string() })
  const toActivation = (a: { fromVersion: number | null; toVersion: number; kind: 'activate' | 'rollback'; at: Date }) => ({ ...a, at: a.at.toISOString() })

  app.post(
    '/v1/rule-sets/:version/activate',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['rule-sets'],
        operationId: 'activateRuleSet',
        summary: 'Make a stored version the active one (re-verified; atomic; every instance switches within a second)',
        description:
          'Refused with 422 `verification-failed` and the report when the version does not pass verification, 409 when it is already active. ' +
          'Activating a retired version puts it back as a rollback does, and is recorded as an activation (kind `activate`; POST /v1/rule-sets/rollback records `rollback`). A county-wide supervisor (or admin) key is required.',
        params: versionParams,
        body: reasonBody,
        response: { 200: activationResponse, ...problemResponses(400, 401, 403, 404, 409, 415, 422, 429, 503) },
      },
    },
    async (req) => {
      requireCountyWide(principalOf(req), 'rule sets are')
      return toActivation(await lifecycle.activate(req, req.params.version, req.body.reason))
    },
  )

  app.post(
    '/v1/rule-sets/rollback',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['rule-sets'],
        operationId: 'rollbackRuleSet',
        summary: 'Re-activate the version that was active before the current one (or `toVersion`)',
        description: 'Undoes the last activation (a second rollback undoes the first). Verified and recorded like an activation; 409 when there is nothing to roll back to, or when another activation committed after the one this rollback read (it would be undone too): look at the activations and roll back again.',
        body: reasonBody.extend({ toVersion: ruleSetVersion.optional() }),
        response: { 200: activationResponse, ...problemResponses(400, 401, 403, 404, 409, 415, 422, 429, 503) },
      },
    },
    async (req) => {
      requireCountyWide(principalOf(req), 'rule sets are')
      return toActivation(await lifecycle.rollback(req, req.body.reason, req.body.toVersion))
    },
  )
}
