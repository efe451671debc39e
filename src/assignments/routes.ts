import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { AppError } from '../http/errors.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { canActForAgency, canSeeQueue } from '../auth/principal.js'
import { problemResponses } from '../http/openapi.js'
import { QUEUES } from '../routing/index.js'
import { escalateAssignment } from './escalation.js'
import { decodeCursor, listAssignments, moveAssignment } from './repository.js'
import { DISPOSITIONS, assignmentSchema } from './schemas.js'
import { ASSIGNMENT_STATUSES, CONSOLE_ACTIONS, type AssignmentStatus } from './state-machine.js'

const listQuery = z
  .object({
    queue: z.enum(QUEUES).optional(),
    agency: z.string().min(1).max(64).optional(),
    status: z
      .string()
      .max(200)
      .optional()
      .describe('One status or a comma-separated list')
      .transform((s, ctx) => {
        if (s === undefined) return undefined
        const list = s.split(',').map((x) => x.trim())
        for (const x of list) {
          if (!(ASSIGNMENT_STATUSES as readonly string[]).includes(x)) ctx.addIssue({ code: 'custom', message: `unknown status "${x}"` })
        }
        return list as AssignmentStatus[]
      }),
    overdue: z
      .enum(['true', 'false'])
      .optional()
      .transform((v) => (v === undefined ? undefined : v === 'true'))
      .describe('true: only open assignments past their due time (overdue follow-ups)'),
    cursor: z.string().min(1).max(64).optional().describe('nextCursor of the previous page'),
    limit: z.coerce.number().int().min(1).max(200).default(50),
  })
  .strict()

const moveBody = z
  .object({
    actor: z.string().min(1).max(128).optional().describe('Who acts: a console position or responder id'),
    reason: z.string().min(1).max(500).optional(),
    disposition: z.enum(DISPOSITIONS).optional().describe('With complete: how the assignment ended'),
  })
  .strict()

export const assignmentRoutes: FastifyPluginAsyncZod<{ db: Db; now?: () => Date }> = async (app, { db, now = () => new Date() }) => {
  app.get(
    '/v1/assignments',
    {
      config: { access: ['console', 'supervisor'] },
      schema: {
        tags: ['assignments'],
        operationId: 'listAssignments',
        summary: 'List assignments for a console (oldest first, cursor pagination)',
        querystring: listQuery,
        description: 'Only the agencies and queues of the caller’s key are listed.',
        response: { 200: z.object({ items: z.array(assignmentSchema), nextCursor: z.string().nullable() }), ...problemResponses(400, 401, 403, 429, 503) },
      },
    },
    async (req) => {
      const p = principalOf(req)
      const { cursor, ...filter } = req.query
      return listAssignments(db, { ...filter, agencies: p.agencies, queues: p.queues, after: cursor ? decodeCursor(cursor) : undefined, now: now() })
    },
  )

  for (const action of CONSOLE_ACTIONS) {
    app.post(
      `/v1/assignments/:id/${action}`,
      {
        config: { access: ['console'] },
        schema: {
          tags: ['assignments'],
          operationId: `${action}Assignment`,
          summary: `${action[0]!.toUpperCase()}${action.slice(1)} an assignment`,
          description:
            action === 'decline'
              ? 'The assignment is declined and escalates at once along the rule set’s fallback (CRU → co-response → police; police and EMS are offered again); the new assignments are in the call’s history. Refused with 409 (illegal-transition, with currentStatus) when the assignment cannot be declined from its status.'
              : 'Refused with 409 (illegal-transition, with currentStatus) when the assignment cannot make this move from its status.',
          params: z.object({ id: z.string().uuid() }),
          body: moveBody.nullish(),
          response: { 200: assignmentSchema, ...problemResponses(400, 401, 403, 404, 409, 429, 503) },
        },
      },
      async (req) => {
        const body = req.body ?? {}
        if (body.disposition && action !== 'complete') {
          throw new AppError('validation-failed', 'a disposition goes with complete', { invalidParams: [{ name: 'disposition', reason: 'only with complete' }] })
        }
        const p = principalOf(req)
        const actor = body.actor ? `${p.name}/${body.actor}` : p.name
        const visible = (a: { agency: string; queue: string }) => canActForAgency(p, a.agency) && canSeeQueue(p, a.queue)
        if (action === 'decline') {
          const { view } = await escalateAssignment(
            db,
            req.params.id,
            { kind: 'decline', actor, reason: body.reason },
            {
              visible,
              onMoved: (trx, v, created) =>
                audit(trx, req, { action: 'assignment.decline', targetType: 'assignment', targetId: v.id, agency: v.agency, details: { callId: v.callId, queue: v.queue, status: v.status, escalatedTo: created.map((c) => c.id) } }),
            },
          )
          return view
        }
        const { view } = await moveAssignment(
          db,
          req.params.id,
          action,
          { actor, reason: body.reason, disposition: body.disposition },
          {
            visible,
            onMoved: (trx, v) => audit(trx, req, { action: `assignment.${action}`, targetType: 'assignment', targetId: v.id, agency: v.agency, details: { callId: v.callId, queue: v.queue, status: v.status } }),
          },
        )
        return view
      },
    )
  }
}
