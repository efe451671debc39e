import type { FastifyPluginAsync } from 'fastify'
import { principalOf } from '../auth/plugin.js'
import { requireCountyWide } from '../auth/principal.js'
import type { Db } from '../db/connect.js'
import { refreshFromDb, type Metrics } from './metrics.js'

/**
 * Prometheus scrape endpoint, in the text exposition format, behind a supervisor key like every
 * other data route. The figures are the county's (queue depths, decisions, errors of every agency),
 * so a key limited to some agencies may not read them: it sees its own in the reports.
 */
export const metricsRoutes: FastifyPluginAsync<{ db: Db; metrics: Metrics; now: () => Date }> = async (app, { db, metrics, now }) => {
  app.get(
    '/metrics',
    // Prometheus scrapes with a supervisor key (authorization: Bearer … in its scrape config).
    { config: { access: ['supervisor'] }, schema: { hide: true, summary: 'Prometheus metrics', tags: ['health'], operationId: 'getMetrics' } },
    async (req, reply) => {
      requireCountyWide(principalOf(req), 'metrics are')
      try {
        await refreshFromDb(db, metrics, now())
      } catch (err) {
        // Process metrics are still worth serving when Postgres is down; the gauges keep their last values.
        metrics.scrapeErrors.inc()
        req.log.warn({ err: { message: (err as Error).message } }, 'metrics: database read failed')
      }
      reply.type(metrics.registry.contentType)
      return metrics.registry.metrics()
    },
  )
}
