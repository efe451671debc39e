import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync } from 'fastify'

/** public/dashboard, found from src/dashboard (tests, tsx) or dist/src/dashboard (production). */
function dashboardDir(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  for (const up of ['../..', '../../..']) {
    const dir = join(here, up, 'public', 'dashboard')
    if (existsSync(join(dir, 'index.html'))) return dir
  }
  throw new Error('public/dashboard not found next to the application')
}

/** uPlot's browser build, served from node_modules: nothing comes from a CDN. */
function uplotDir(): string {
  return dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'))
}

/**
 * The supervisor dashboard: static files (no data, so open) that read /v1/reports/* with the
 * supervisor key the page asks for.
 */
export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  // Relative asset URLs in index.html need the trailing slash.
  app.get('/dashboard', { config: { access: 'public' }, schema: { hide: true } }, async (_req, reply) => reply.redirect('/dashboard/', 301))
  await app.register(fastifyStatic, { root: dashboardDir(), prefix: '/dashboard/', index: ['index.html'], redirect: true, schemaHide: true })
  await app.register(fastifyStatic, { root: uplotDir(), prefix: '/dashboard/vendor/uplot/', decorateReply: false, schemaHide: true, allowedPath: (p) => /^\/uPlot\.(iife\.min\.js|min\.css)$/.test(p) })
}
