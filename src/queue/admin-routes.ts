import { createBullBoard } from '@bull-board/api'
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter'
import { FastifyAdapter } from '@bull-board/fastify'
import type { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import { z } from 'zod'
import type { Db } from '../db/connect.js'
import { audit } from '../auth/audit.js'
import { principalOf } from '../auth/plugin.js'
import { requireCountyWide } from '../auth/principal.js'
import { AppError } from '../http/errors.js'
import { problemResponses } from '../http/openapi.js'
import { QUEUES } from '../routing/index.js'
import { createLifecycleQueue, LIFECYCLE_QUEUE } from './lifecycle.js'
import { closeRedis } from './redis.js'
import type { RedisBreaker } from './redis-breaker.js'
import { createQueues } from './queues.js'

export const QUEUE_DASHBOARD_PATH = '/admin/queues'

const failedJobSchema = z
  .object({
    queue: z.string(),
    jobId: z.string().nullable(),
    name: z.string(),
    /** Job data is ids only (assignment, call, agency, queue, role; a case-management job's case manager, county staff): never the caller's or subject's data. */
    data: z.unknown(),
    failedReason: z.string(),
    attemptsMade: z.number().int(),
    createdAt: z.string(),
    failedAt: z.string().nullable(),
  })
  .meta({ id: 'FailedJob' })

/**
 * What operators need to see of the queues: failed jobs (a JSON listing) and the BullMQ dashboard
 * (@bull-board at /admin/queues). Both admin-only: the dashboard's routes declare no access, and the
 * auth plugin's onRequest hook closes every such route to all but admin keys — its pages, its API
 * and its static files alike. And county-wide, as keys and metrics: the queues hold every agency's
 * jobs, and a pause or a clean acts on every agency's calls, so an admin narrowed to some agencies
 * may not use them.
 */
export const queueAdminRoutes: FastifyPluginAsyncZod<{ db: Db; connection: Redis; breaker: RedisBreaker; bullmqPrefix: string }> = async (app, { db, connection, breaker, bullmqPrefix }) => {
  // (Not `prefix`: Fastify would take it for a route prefix.)
  // Read-only handles on the queues, made on first use: building the app (tests, the OpenAPI
  // script) touches no queue. Producers live in the relay and the workers.
  let handles: Queue[] | undefined
  let own: Redis | undefined
  // Their connection waits as long as Redis takes, on purpose (below): while the API's breaker
  // says Redis is not answering, a request is refused at once rather than left hanging with it.
  const refuseWhileRedisSilent = () => {
    if (!breaker.closed) throw new AppError('service-unavailable', 'Redis is not answering; retry later')
  }
  const queuesNow = (): Queue[] => {
    refuseWhileRedisSilent()
    if (handles) return handles
    // Not made on a Redis that is away: BullMQ's handles on a connection that has never been ready
    // leave a rejection nobody handles (ioredis' "Connection is closed."), which ends the process.
    if (connection.status !== 'ready') throw new AppError('service-unavailable', 'Redis is not reachable; retry later')
    // A connection of their own without the app's auto-pipelining: BullMQ is not known to work with
    // it (taskforcesh/bullmq#457 reports "Job is not in the active list" errors with it on). Nor the
    // API connection's 1 s command time-out: emptying a backlog is one script that may take longer,
    // and a time-out would answer 500 for an action Redis goes on to complete.
    own = connection.duplicate({ enableAutoPipelining: false, commandTimeout: undefined })
    own.on('error', () => {})
    handles = [...Object.values(createQueues(own, bullmqPrefix)), createLifecycleQueue(own, bullmqPrefix)]
    for (const q of handles) q.on('error', (err) => app.log.warn({ queue: q.name, err: { message: err.message } }, 'queue handle error'))
    board.replaceQueues(handles.map((q) => new BullMQAdapter(q)))
    return handles
  }
  app.addHook('onClose', async () => {
    if (handles) await Promise.all(handles.map((q) => q.close()))
    // quit, not disconnect: replies still due to the handles arrive first (no 'Connection is closed').
    if (own) await closeRedis(own)
  })

  app.get(
    '/v1/admin/failed-jobs',
    {
      config: { access: ['admin'] },
      preValidation: async (req) => requireCountyWide(principalOf(req), 'the queues are'),
      schema: {
        tags: ['admin'],
        operationId: 'listFailedJobs',
        summary: 'Jobs that failed for good (retries used up, or unrecoverable), newest first',
        description: 'Needs an admin key without an agency restriction: the queues hold every agency’s jobs.',
        querystring: z
          .object({
            queue: z.enum([...QUEUES, LIFECYCLE_QUEUE]).optional().describe('One queue; all of them when left out'),
            limit: z.coerce.number().int().min(1).max(500).default(100),
          })
          .strict(),
        response: { 200: z.object({ items: z.array(failedJobSchema), counts: z.record(z.string(), z.number().int()) }), ...problemResponses(400, 401, 403, 429, 503) },
      },
    },
    async (req) => {
      const { queue, limit } = req.query
      const chosen = queuesNow().filter((q) => queue === undefined || q.name === queue)
      const counts: Record<string, number> = {}
      const items: z.infer<typeof failedJobSchema>[] = []
      for (const q of chosen) {
        counts[q.name] = await q.getFailedCount()
        for (const job of await q.getFailed(0, limit - 1)) {
          items.push({
            queue: q.name,
            jobId: job.id ?? null,
            name: job.name,
            data: job.data,
            failedReason: job.failedReason ?? '',
            attemptsMade: job.attemptsMade,
            createdAt: new Date(job.timestamp).toISOString(),
            failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
          })
        }
      }
      items.sort((a, b) => (b.failedAt ?? '').localeCompare(a.failedAt ?? ''))
      return { items: items.slice(0, limit), counts }
    },
  )

  const serverAdapter = new FastifyAdapter()
  serverAdapter.setBasePath(QUEUE_DASHBOARD_PATH)
  const board = createBullBoard({ queues: [], serverAdapter })
  // bull-board answers every error itself with a 500 (and the message). Rethrown, an error reaches
  // the app's handler: the auth hook's 401/403 stay 401/403 as problem+json, and 5xx leak nothing.
  serverAdapter.setErrorHandler((err) => {
    throw err
  })
  await app.register(async (scope) => {
    // After the auth hook (registered on the root): only a county-wide admin's request creates the handles.
    scope.addHook('onRequest', async (req) => {
      requireCountyWide(principalOf(req), 'the queues are')
    })
    scope.addHook('preHandler', async () => {
      queuesNow()
    })
    // Asked again last, after the rate limiter: its hook is each route's own (added at onRoute by
    // the plugin, before this one), so it runs after every scope hook. On a Redis that hangs its
    // command is the one that opens the breaker, and the board is refused here rather than left
    // waiting on its own connection, which has no time-out, for as long as Redis hangs.
    scope.addHook('onRoute', (route) => {
      route.preHandler = [...[route.preHandler ?? []].flat(), async () => refuseWhileRedisSilent()]
    })
    // Every action taken on the board (pause, resume, clean, empty, obliterate, retry, promote, add,
    // remove…) is recorded before it runs: no record, no action. Looking (GET) is not recorded.
    scope.addHook('preHandler', async (req) => {
      if (req.method === 'GET' || req.method === 'HEAD') return
      const params = (req.params ?? {}) as Record<string, string>
      await audit(db, req, { action: 'queue.admin', targetType: 'queue', targetId: params.queueName ?? null, details: { method: req.method, route: req.routeOptions.url, params } })
    })
    await scope.register(serverAdapter.registerPlugin(), { prefix: QUEUE_DASHBOARD_PATH })
  })
}
