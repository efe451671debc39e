/**
 * Case-manager links, kept by the county's case-management system: DESIGN rule 6 routes a repeat
 * call about a person with an active link to that case manager. A link is behavioral-health data:
 * only county-wide supervisor (or admin) keys may read or change it, every read and change is
 * audited, and the person id never reaches a log line (see src/logger.ts).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { requireCountyWide } from '../auth/principal.js'
import { notFound } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { deleteCaseLink, findCaseLink, putCaseLink } from './repository.js'

const params = z.object({ personId: z.string().min(1).max(64).describe('The county person id (call.subject.personId)') }).strict()

const body = z
  .object({
    caseManager: z.string().min(1).max(128).describe('The case manager (or team) id in the county system'),
    active: z.boolean().default(true).describe('false keeps the link on record without routing to it'),
  })
  .strict()

const caseLinkSchema = z
  .object({ personId: z.string(), caseManager: z.string(), active: z.boolean(), updatedAt: z.string() })
  .meta({ id: 'CaseLink' })


export const caseLinkRoutes: FastifyPluginAsyncZod<{ db: Db; now: () => Date }> = async (app, { db, now }) => {
  app.put(
    '/v1/case-links/:personId',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['case-links'],
        operationId: 'putCaseLink',
        summary: 'Create or replace the county case-manager link of a person (DESIGN rule 6)',
        description: 'For the county case-management system. Needs a supervisor or admin key without an agency restriction. Audited.',
        params,
        body,
        response: { 201: caseLinkSchema.describe('Created'), 200: caseLinkSchema.describe('Replaced'), ...problemResponses(400, 401, 403, 429, 503) },
      },
    },
    async (req, reply) => {
      requireCountyWide(principalOf(req), 'case links are')
      const { created, link } = await db.transaction().execute(async (trx) => {
        const out = await putCaseLink(trx, { personId: req.params.personId, ...req.body }, now())
        await audit(trx, req, { action: out.created ? 'case-link.create' : 'case-link.update', targetType: 'person', targetId: req.params.personId, details: { active: req.body.active } })
        return out
      })
      return reply.status(created ? 201 : 200).send(link)
    },
  )

  app.get(
    '/v1/case-links/:personId',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['case-links'],
        operationId: 'getCaseLink',
        summary: 'The county case-manager link of a person',
        description: 'Needs a supervisor or admin key without an agency restriction. Every read is audited.',
        params,
        response: { 200: caseLinkSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req) => {
      requireCountyWide(principalOf(req), 'case links are')
      const link = await findCaseLink(db, req.params.personId)
      await audit(db, req, { action: 'case-link.read', targetType: 'person', targetId: req.params.personId, details: { found: link !== undefined } })
      if (!link) throw notFound('case link')
      return link
    },
  )

  app.delete(
    '/v1/case-links/:personId',
    {
      config: { access: ['supervisor'] },
      schema: {
        tags: ['case-links'],
        operationId: 'deleteCaseLink',
        summary: 'Remove the county case-manager link of a person',
        description: 'The link is deleted, not kept inactive: nothing is stored that is no longer needed. Audited.',
        params,
        response: { 204: z.null().describe('Removed'), ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (req, reply) => {
      requireCountyWide(principalOf(req), 'case links are')
      const removed = await db.transaction().execute(async (trx) => {
        const gone = await deleteCaseLink(trx, req.params.personId)
        if (gone) await audit(trx, req, { action: 'case-link.delete', targetType: 'person', targetId: req.params.personId })
        return gone
      })
      if (!removed) throw notFound('case link')
      return reply.status(204).send(null)
    },
  )
}
