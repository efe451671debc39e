import { createHash } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { FastifyReply } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { AppError } from '../http/errors.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { canActForAgency, canSeeQueue } from '../auth/principal.js'
import { problemResponses, type HeaderDoc } from '../http/openapi.js'
import { QUEUES } from '../routing/index.js'
import { escalateAssignment } from './escalation.js'
import { encodePosition, feedHead } from './feed.js'
import { feedScope, feedWaiter, keyUnchanged, type AssignmentFeed } from './feed-routes.js'
import { decodeCursor, listAssignments, moveAssignment, replacementsOf } from './repository.js'
import { DISPOSITIONS, assignmentSchema, illegalTransitionSchema } from './schemas.js'
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
      .describe('true: only open assignments past their due time (overdue follow-ups); false filters nothing, as when absent'),
    cursor: z.string().min(1).max(64).optional().describe('nextCursor of the previous page'),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    wait: z.coerce
      .number()
      .int()
      .min(0)
      .max(30)
      .optional()
      .describe('Long-poll: with If-None-Match, wait up to this many seconds for the page to change before answering 304'),
  })
  .strict()

/** A waiting long-poll whose key was revoked, expired or changed meanwhile: refused as a request with it would be. */
const keyChanged = (reply: FastifyReply): never => {
  reply.removeHeader('etag')
  reply.removeHeader('feed-position')
  reply.header('www-authenticate', 'Bearer realm="cad-router"')
  throw new AppError('unauthorized', 'the API key was revoked, expired or changed while the request waited; send it again')
}

/** A strong validator of the page as sent: equal pages, equal tags. */
const etagOf = (page: unknown): string => `"${createHash('sha256').update(JSON.stringify(page)).digest('base64url').slice(0, 27)}"`

function etagMatches(header: string, etag: string): boolean {
  return header.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '')
    return tag === '*' || tag === etag
  })
}

const PAGE_HEADERS: Record<string, HeaderDoc> = {
  ETag: { description: 'The page’s entity tag: send it back as If-None-Match (with `wait` to long-poll)', schema: { type: 'string' } },
  'Feed-Position': { description: 'Where the assignment stream continues from this page: GET /v1/assignments/stream?lastEventId=<Feed-Position>', schema: { type: 'string' } },
  'Cache-Control': { description: '`private, no-cache`: a page is the key’s own, and changes', schema: { type: 'string', example: 'private, no-cache' } },
}

const moveBody = z
  .object({
    actor: z.string().min(1).max(128).optional().describe('Who acts: a console position or responder id'),
    reason: z.string().min(1).max(500).optional().describe("Why, in the console's words: shown in the call's history, and removed with the call's personal data at retention"),
    disposition: z.enum(DISPOSITIONS).optional().describe('With complete, and required there: how the assignment ended'),
  })
  .strict()

export const assignmentRoutes: FastifyPluginAsyncZod<{ db: Db; feed: AssignmentFeed; now?: () => Date }> = async (app, { db, feed, now = () => new Date() }) => {
  // A long-poll waits up to 30 s: on close it answers at once, or the server would wait for it
  // past the shutdown grace period.
  const stopping = new AbortController()
  // One listener per waiting long-poll, removed when it answers: many at once is not a leak.
  setMaxListeners(0, stopping.signal)
  app.addHook('preClose', async () => stopping.abort())
  app.get(
    '/v1/assignments',
    {
      config: { access: ['console', 'supervisor'], responseHeaders: { 200: PAGE_HEADERS, 304: PAGE_HEADERS } },
      schema: {
        tags: ['assignments'],
        operationId: 'listAssignments',
        summary: 'List assignments for a console (oldest first, cursor pagination)',
        querystring: listQuery,
        description:
          'Only the agencies and queues of the caller’s key are listed. Every page has an ETag; with If-None-Match an unchanged page answers 304. ' +
          'Long-poll: add `wait=<seconds>` (up to 30) to If-None-Match, and the answer comes as soon as the page changes, or as 304 when the time is up. ' +
          'The Feed-Position header is where the assignment stream continues from this page: open GET /v1/assignments/stream?lastEventId=<Feed-Position> to receive every change the page does not show yet. ' +
          'Listing several pages, use the first page’s: an assignment inserted before it was read but committed after it may be on no later page (pages follow insertion order), and the stream from the first page’s position carries it.',
        headers: z.looseObject({ 'if-none-match': z.string().max(1000).optional().describe('The ETag of the page the console has') }),
        response: {
          200: z.object({ items: z.array(assignmentSchema), nextCursor: z.string().nullable() }),
          304: z.void().describe('The page has not changed (If-None-Match), or did not change within `wait` seconds'),
          ...problemResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async (req, reply) => {
      const p = principalOf(req)
      const { cursor, wait, ...filter } = req.query
      const after = cursor ? decodeCursor(cursor) : undefined
      const given = req.headers['if-none-match']
      reply.header('cache-control', 'private, no-cache')
      // Listen before the first read, so a change committed just after it still wakes us.
      const waiter = wait && given ? feedWaiter(await feed.ready(), feedScope(p, filter), reply.raw, stopping.signal) : undefined
      const deadline = performance.now() + (wait ?? 0) * 1000
      // The page and the feed position from one snapshot: a stream opened at that position
      // brings every change the page does not show.
      const read = (on: Db) =>
        on
          .transaction()
          .setIsolationLevel('repeatable read')
          .execute(async (trx) => ({
            position: await feedHead(trx),
            page: await listAssignments(trx, { ...filter, agencies: p.agencies, queues: p.queues, after, now: now() }),
          }))
      let woken = false
      try {
        for (;;) {
          // A change wakes every long-polling console of its scope at once: their reads take turns
          // on the feed's connections, not the service's pool that ingest needs.
          // A wait outlives the authentication it began with: a key revoked or changed meanwhile gets no new page.
          const { page, position } = woken ? await feed.catchUp(async (on) => ((await keyUnchanged(on, p)) ? read(on) : keyChanged(reply))) : await read(db)
          const etag = etagOf(page)
          reply.header('etag', etag)
          reply.header('feed-position', encodePosition(position))
          if (!given || !etagMatches(given, etag)) return page
          const left = deadline - performance.now()
          if (!waiter || left <= 0 || !(await waiter.next(left))) return reply.code(304).send()
          woken = true
        }
      } finally {
        waiter?.close()
      }
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
              ? 'The assignment is declined and escalates at once along the rule set’s `escalation` (by default CRU → co-response, case management → CRU; police instead when that needs CRU and CRU is off hours or at capacity); a declined support whose queue has a fallback is dropped and the primary carries the call; police, EMS and follow-up assignments are offered again as new assignments. The new assignments are in the call’s history. Refused with 409 (illegal-transition, with currentStatus) when the assignment cannot be declined from its status.'
              : `${action === 'complete' ? 'Requires a `disposition` (400 without one): the reports and the EIDO view count on it. ' : ''}Refused with 409 (illegal-transition, with currentStatus) when the assignment cannot make this move from its status.`,
          params: z.object({ id: z.string().uuid() }),
          body: moveBody.nullish(),
          response: { 200: assignmentSchema, ...problemResponses(400, 401, 403, 404, 429, 503), 409: illegalTransitionSchema.describe('The move cannot be made from the assignment’s status (illegal-transition)') },
        },
      },
      async (req) => {
        try {
          const body = req.body ?? {}
          if (body.disposition && action !== 'complete') {
            throw new AppError('validation-failed', 'a disposition goes with complete', { invalidParams: [{ name: 'disposition', reason: 'only with complete' }] })
          }
          // How a call ended is what the diversion and follow-up figures count: no completion without it.
          if (action === 'complete' && !body.disposition) {
            throw new AppError('validation-failed', 'complete needs a disposition', { invalidParams: [{ name: 'disposition', reason: 'required with complete' }] })
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
                // The app's clock: CRU's hours decide whether the fallback may hand the call to CRU again.
                now: now(),
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
              scope: { agencies: p.agencies, queues: p.queues },
              audit: { actor: p.name, keyId: p.keyId, role: p.role, action: `assignment.${action}`, sourceIp: req.ip, requestId: req.id },
            },
          )
          return view
        } catch (err) {
          // A console with a stale screen acts on an assignment that was escalated or re-offered
          // meanwhile: the refusal names what took over (what the key may see), so it can act on that.
          if (!(err instanceof AppError) || err.code !== 'illegal-transition') throw err
          // A failed lookup must not turn the refusal into a 503: the 409 goes without the names.
          const replacedBy = await replacementsOf(db, req.params.id, principalOf(req)).catch(() => [])
          throw replacedBy.length ? new AppError(err.code, err.detail, { extra: { ...err.extra, replacedBy } }) : err
        }
      },
    )
  }
}
