import type { FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { notFound, AppError } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { instant } from '../http/storable.js'
import { AGENCY_ID_MAX_LENGTH, AGENCY_ID_PATTERN, QUEUES } from '../routing/index.js'
import { audit } from './audit.js'
import type { KeyCache } from './key-cache.js'
import { createKey, listKeys, mustNameAgencies, revokeKey, takesAgencies, takesQueues } from './keys.js'
import { principalOf } from './plugin.js'
import { API_ROLES, requireCountyWide } from './principal.js'

const keyView = z
  .object({
    id: z.string().uuid(),
    name: z.string(),
    role: z.enum(API_ROLES),
    agencies: z.array(z.string()).nullable().describe('null: every agency'),
    queues: z.array(z.enum(QUEUES)).nullable().describe('null: every queue'),
    keyPrefix: z.string().describe('The first characters of the key, to recognise it'),
    createdBy: z.string(),
    createdAt: z.string(),
    expiresAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
  })
  .meta({ id: 'ApiKey' })

/**
 * A key may act for any agency, so only a county-wide admin manages them: an admin narrowed to some
 * agencies could otherwise mint a key for every agency, or revoke another agency's CAD key. Run
 * before validation, so such a key learns nothing from the body's errors either.
 */
const keysAreCountyWide = async (req: FastifyRequest) => requireCountyWide(principalOf(req), 'API keys are managed')

// An agency id as calls carry it (`hastings-pd`): a key scoped to anything else could never act.
const agencyId = z.string().min(1).max(AGENCY_ID_MAX_LENGTH).regex(AGENCY_ID_PATTERN)

const auditEntry = z.object({
  id: z.number().int(),
  at: z.string(),
  actor: z.string(),
  keyId: z.string().nullable(),
  role: z.string().nullable(),
  action: z.string(),
  targetType: z.string(),
  targetId: z.string().nullable(),
  agency: z.string().nullable(),
  sourceIp: z.string().nullable(),
  requestId: z.string().nullable(),
  details: z.unknown(),
})

export const authRoutes: FastifyPluginAsyncZod<{ db: Db; keys: KeyCache }> = async (app, { db, keys }) => {
  app.post(
    '/v1/keys',
    {
      config: { access: ['admin'] },
      preValidation: keysAreCountyWide,
      schema: {
        tags: ['keys'],
        operationId: 'createKey',
        summary: 'Create an API key (shown once in the answer, stored only as a hash)',
        body: z
          .object({
            name: z.string().min(1).max(100),
            role: z.enum(API_ROLES),
            agencies: z
              .array(agencyId)
              .min(1)
              .max(100)
              .nullable()
              .optional()
              .describe('The agencies the key may act for; null: every agency. Required for cad and console keys, so that a forgotten field never grants the whole county; refused for auditor keys (the audit log is read county-wide only)'),
            queues: z.array(z.enum(QUEUES)).min(1).max(QUEUES.length).nullable().default(null).describe('Console keys only: the queues it may work; null: every queue'),
            expiresAt: instant.nullable().default(null),
          })
          .strict(),
        response: { 201: keyView.extend({ key: z.string().describe('The key itself: store it now, it is never shown again') }), ...problemResponses(400, 401, 403, 503) },
      },
    },
    async (req, reply) => {
      const b = req.body
      if (b.expiresAt && new Date(b.expiresAt) <= new Date()) {
        throw new AppError('validation-failed', 'the key would be expired already', { invalidParams: [{ name: 'expiresAt', reason: 'in the past' }] })
      }
      if (b.agencies === undefined && mustNameAgencies(b.role)) {
        throw new AppError('validation-failed', `a ${b.role} key names its agencies, or null for every agency`, { invalidParams: [{ name: 'agencies', reason: 'required for cad and console keys' }] })
      }
      if (b.agencies && !takesAgencies(b.role)) {
        throw new AppError('validation-failed', 'the audit log is read county-wide only: an auditor key names no agencies', { invalidParams: [{ name: 'agencies', reason: 'not for auditor keys' }] })
      }
      if (b.queues && !takesQueues(b.role)) {
        throw new AppError('validation-failed', `queues narrow a console key; a ${b.role} key has none`, { invalidParams: [{ name: 'queues', reason: 'console keys only' }] })
      }
      const agencies = b.agencies ?? null
      const created = await db.transaction().execute(async (trx) => {
        const out = await createKey(trx, { name: b.name, role: b.role, agencies, queues: b.queues, expiresAt: b.expiresAt ? new Date(b.expiresAt) : null, createdBy: req.principal?.name ?? 'admin' })
        await audit(trx, req, { action: 'key.create', targetType: 'api_key', targetId: out.view.id, details: { name: b.name, role: b.role, agencies, queues: b.queues } })
        return out
      })
      return reply.status(201).send({ ...created.view, key: created.key })
    },
  )

  app.get(
    '/v1/keys',
    {
      config: { access: ['admin'] },
      preValidation: keysAreCountyWide,
      schema: { tags: ['keys'], operationId: 'listKeys', summary: 'List API keys (never the keys themselves)', response: { 200: z.object({ items: z.array(keyView) }), ...problemResponses(401, 403, 503) } },
    },
    async () => ({ items: await listKeys(db) }),
  )

  app.post(
    '/v1/keys/:id/revoke',
    {
      config: { access: ['admin'] },
      preValidation: keysAreCountyWide,
      schema: {
        tags: ['keys'],
        operationId: 'revokeKey',
        summary: 'Revoke an API key, effective at once',
        params: z.object({ id: z.string().uuid() }),
        response: { 200: keyView, ...problemResponses(400, 401, 403, 404, 503) },
      },
    },
    async (req) => {
      const view = await db.transaction().execute(async (trx) => {
        const v = await revokeKey(trx, req.params.id)
        if (v) await audit(trx, req, { action: 'key.revoke', targetType: 'api_key', targetId: v.id, details: { name: v.name } })
        return v
      })
      if (!view) throw notFound(`key ${req.params.id}`)
      // Committed: this process stops honouring the key now; the others on the trigger's NOTIFY.
      keys.invalidate(view.id)
      return view
    },
  )

  app.get(
    '/v1/audit',
    {
      config: { access: ['auditor'] },
      // Every agency's records, and county person ids (case links, evaluations): county-wide, as case links are.
      preValidation: async (req) => requireCountyWide(principalOf(req), 'the audit log is read'),
      schema: {
        tags: ['audit'],
        operationId: 'listAudit',
        summary: 'Read the append-only audit log, newest first',
        description: 'Needs an auditor or admin key without an agency restriction: the log holds every agency’s records and county person ids.',
        querystring: z
          .object({
            action: z.string().min(1).max(64).optional().describe('e.g. call.read, assignment.accept, key.create, rule-set.activate'),
            actor: z.string().min(1).max(100).optional(),
            keyId: z.string().uuid().optional(),
            targetType: z.string().min(1).max(64).optional(),
            targetId: z.string().min(1).max(128).optional(),
            agency: agencyId
              .optional()
              .describe("The agency the record is about (a call's agency for call.read). A read by another agency through its assignment on the call names the reader in details.agency: find those by keyId or actor"),
            from: instant.optional(),
            to: instant.optional(),
            before: z.coerce.number().int().positive().optional().describe('nextBefore of the previous page'),
            limit: z.coerce.number().int().min(1).max(500).default(100),
          })
          .strict(),
        response: { 200: z.object({ items: z.array(auditEntry), nextBefore: z.number().int().nullable() }), ...problemResponses(400, 401, 403, 503) },
      },
    },
    async (req) => {
      const f = req.query
      let q = db.selectFrom('audit_log').selectAll().orderBy('id', 'desc').limit(f.limit + 1)
      if (f.action) q = q.where('action', '=', f.action)
      if (f.actor) q = q.where('actor', '=', f.actor)
      if (f.keyId) q = q.where('key_id', '=', f.keyId)
      if (f.targetType) q = q.where('target_type', '=', f.targetType)
      if (f.targetId) q = q.where('target_id', '=', f.targetId)
      if (f.agency) q = q.where('agency', '=', f.agency)
      if (f.from) q = q.where('at', '>=', new Date(f.from))
      if (f.to) q = q.where('at', '<', new Date(f.to))
      if (f.before) q = q.where('id', '<', f.before)
      const rows = await q.execute()
      const page = rows.slice(0, f.limit)
      return {
        items: page.map((r) => ({
          id: r.id,
          at: r.at.toISOString(),
          actor: r.actor,
          keyId: r.key_id,
          role: r.role,
          action: r.action,
          targetType: r.target_type,
          targetId: r.target_id,
          agency: r.agency,
          sourceIp: r.source_ip,
          requestId: r.request_id,
          details: r.details,
        })),
        nextBefore: rows.length > f.limit ? (page[page.length - 1]?.id ?? null) : null,
      }
    },
  )
}
