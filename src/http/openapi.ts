import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod'
import { rolesOf, routeAccess, type RouteAccess } from '../auth/plugin.js'
import { ERRORS } from './errors.js'
import { problemSchema } from './problem.js'

const STATUS_TEXT: Record<number, string> = {
  400: 'The request is not valid: see invalidParams',
  401: 'No API key, or an unknown, expired or revoked one',
  403: 'The key’s role or agency scope does not allow this',
  404: 'Not found',
  409: 'Conflict with the stored state',
  413: 'Body larger than the limit',
  414: 'A path parameter is longer than the router accepts (the longest id, 128 characters): `invalidParams` names it',
  415: 'Content type is not application/json',
  422: 'The rule set failed verification: `detail` is the readable report, `findings` lists each finding',
  429: 'Rate limit of the API key reached: retry after Retry-After seconds',
  503: 'Postgres or Redis is unavailable: retry after Retry-After seconds',
}

/** Problem responses for a route's schema, so every error it can give is documented. */
export function problemResponses(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, problemSchema.describe(STATUS_TEXT[s] ?? 'Error')]))
}

/** A header an answer carries, as the OpenAPI document shows it. */
export interface HeaderDoc {
  description: string
  schema: { type: 'string' | 'integer'; minimum?: number; example?: string }
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Headers this route's answers carry besides the common ones, by status: for the OpenAPI document. */
    responseHeaders?: Record<number, Record<string, HeaderDoc>>
  }
}

/** For a route that answers another type when asked by Accept: caches keep the answers apart. */
export const VARY_ACCEPT: Record<string, HeaderDoc> = {
  Vary: { description: '`accept`: the answer’s type follows the Accept header', schema: { type: 'string', example: 'accept' } },
}

/** Headers that many answers carry: defined once, under components.headers. */
const COMMON_HEADERS = {
  'X-Request-Id': { description: 'The request id: a problem answer repeats it in `instance`, and the service’s log lines carry it', schema: { type: 'string' } },
  'Retry-After': { description: 'Seconds to wait before trying again', schema: { type: 'integer', minimum: 0 } },
  'WWW-Authenticate': { description: 'How to authenticate: `Bearer realm="cad-router"`', schema: { type: 'string' } },
  'X-RateLimit-Limit': { description: 'Requests a minute the API key may make, counted by every API instance together; while Redis does not answer, each instance counts on its own, with the same limit', schema: { type: 'integer', minimum: 0 } },
  'X-RateLimit-Remaining': { description: 'Requests the API key has left in the current minute', schema: { type: 'integer', minimum: 0 } },
  'X-RateLimit-Reset': { description: 'Seconds until the current minute’s count starts again', schema: { type: 'integer', minimum: 0 } },
  'Cache-Control': { description: '`no-store`: what a key reads (callers, subjects, addresses, figures) is kept by no browser or proxy cache', schema: { type: 'string', example: 'no-store' } },
} satisfies Record<string, HeaderDoc>
type CommonHeader = keyof typeof COMMON_HEADERS

const RATE_LIMIT_HEADERS: readonly CommonHeader[] = ['X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset']

/** The common headers an answer of this status carries (`limited`: the route counts against the key's rate limit). */
function commonHeadersOf(status: number, limited: boolean): CommonHeader[] {
  const names: CommonHeader[] = ['X-Request-Id']
  if (status === 401) names.push('WWW-Authenticate')
  if (status === 429 || status === 503) names.push('Retry-After')
  // The limit is counted after authentication and validation: successes and 429s carry the count.
  if (limited && (status < 400 || status === 429)) names.push(...RATE_LIMIT_HEADERS)
  // Set as a route that needs a key starts (src/auth/plugin.ts), and on the router's own errors
  // (src/http/problem.ts). A route's own Cache-Control (the listing's, the stream's) is listed over this one.
  if (limited) names.push('Cache-Control')
  return names
}

interface Operation {
  requestBody?: { required?: boolean; content?: Record<string, { schema?: { anyOf?: { type?: string }[] } }> }
  responses?: Record<string, { description?: string; content?: Record<string, unknown>; headers?: Record<string, unknown> }>
  'x-roles'?: string[]
  'x-response-headers'?: Record<string, Record<string, HeaderDoc>>
}

/**
 * What the route schemas cannot say, said in the document: errors are sent as
 * application/problem+json (a generated client must know that type to read them); the answers
 * that come from Fastify or its plugins rather than the handler (a body too large or not JSON, the
 * rate limit, a path parameter longer than the router's limit) are listed on every operation they
 * can come from; and each answer's headers, common and the route's own, are listed on it.
 */
export function documentResponses<T extends { paths?: object; components?: object }>(doc: T): T {
  const problem = (status: number) => ({ description: STATUS_TEXT[status] ?? 'Error', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } })
  for (const [path, methods] of Object.entries(doc.paths ?? {}) as [string, Record<string, Operation>][]) {
    for (const op of Object.values(methods)) {
      const responses = (op.responses ??= {})
      if (op.requestBody) for (const s of [400, 413, 415]) responses[s] ??= problem(s)
      // A body the route takes as nullish (a console move) may be left out altogether.
      if (op.requestBody?.content?.['application/json']?.schema?.anyOf?.some((s) => s.type === 'null')) op.requestBody.required = false
      // The router refuses an over-long parameter before any route schema sees it (maxParamLength).
      if (path.includes('{')) responses[414] ??= problem(414)
      // Every /v1 operation refuses query parameters it does not take (app.ts gives one that declares
      // none an empty strict querystring): a 400 even where nothing else is validated (GET /v1/keys).
      if (path.startsWith('/v1/')) responses[400] ??= problem(400)
      if (path.startsWith('/v1/')) responses[429] ??= problem(429)
      const own = op['x-response-headers'] ?? {}
      delete op['x-response-headers']
      const limited = (op['x-roles']?.length ?? 0) > 0
      for (const [status, r] of Object.entries(responses)) {
        const json = r.content?.['application/json']
        if (Number(status) >= 400 && json && r.content) {
          delete r.content['application/json']
          r.content['application/problem+json'] = json
        }
        // A 304 has no body (the route schema's void would otherwise show as a JSON one).
        if (status === '304') delete r.content
        r.headers = {
          ...Object.fromEntries(commonHeadersOf(Number(status), limited).map((h) => [h, { $ref: `#/components/headers/${h}` }])),
          ...Object.fromEntries(Object.entries(own[status] ?? {}).map(([h, d]) => [h, { description: d.description, schema: d.schema }])),
        }
      }
    }
  }
  const components = ((doc as { components?: Record<string, unknown> }).components ??= {})
  components.headers = Object.fromEntries(Object.entries(COMMON_HEADERS).map(([h, d]) => [h, { description: d.description, schema: d.schema }]))
  pruneUnusedSchemas(doc.paths ?? {}, components as { schemas?: Record<string, unknown> })
  return doc
}

/**
 * Drops component schemas no operation uses. The zod provider registers an input and an output
 * form of every named schema; the forms nobody sends or receives (a response's input form, the
 * request's parsed form, whose defaults make the example's missing flags required) would reach
 * generated clients as types nothing uses, one of them failing its own example.
 */
function pruneUnusedSchemas(paths: object, components: { schemas?: Record<string, unknown> }): void {
  const schemas = components.schemas
  if (!schemas) return
  const used = new Set<string>()
  const PREFIX = '#/components/schemas/'
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk)
    if (!node || typeof node !== 'object') return
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith(PREFIX)) {
        const name = v.slice(PREFIX.length)
        if (!used.has(name)) {
          used.add(name)
          walk(schemas[name])
        }
      } else walk(v)
    }
  }
  walk(paths)
  for (const name of Object.keys(schemas)) if (!used.has(name)) delete schemas[name]
}

export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'cad-router',
        version,
        description:
          'Routes 911 calls posted by CAD to police, the Crisis Response Unit (CRU), co-response, EMS or a case manager, ' +
          'explains each decision and queues the assignments for responder pools and dispatch consoles. ' +
          `Errors are application/problem+json (RFC 9457); their codes: ${Object.keys(ERRORS).join(', ')}.`,
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'An API key: Authorization: Bearer cadr_…' } } },
      security: [{ apiKey: [] }],
      tags: [
        { name: 'calls', description: 'Call events from CAD and the decisions they produce' },
        { name: 'assignments', description: 'Dispatch consoles: list assignments and move them through their lifecycle' },
        { name: 'eido', description: 'NENA EIDO (NENA-STA-021) in and out' },
        { name: 'keys', description: 'API keys (admin)' },
        { name: 'audit', description: 'The append-only audit log (auditor)' },
        { name: 'health', description: 'Liveness and readiness' },
        { name: 'reports', description: 'Supervisors: diversion and capture statistics, queue status' },
        { name: 'rule-sets', description: 'Supervisors: versioned routing rule sets — drafts, verification, activation, rollback' },
        { name: 'routing', description: 'Evaluate a call against a rule set without side effects' },
        { name: 'replay', description: 'Supervisors: replay stored decisions against a rule set, and shadow mode' },
        { name: 'case-links', description: 'County case-manager links behind DESIGN rule 6 (county case-management system)' },
      ],
    },
    // Each operation names the roles whose keys may call it (x-roles, and a line of its description),
    // from the same rule the auth hook applies.
    transform: (input) => {
      const out = jsonSchemaTransform(input)
      const access = routeAccess(input.url, (input.route as { config?: { access?: RouteAccess } }).config)
      const roles = access === 'public' ? [] : rolesOf(access)
      const line = access === 'public' ? 'No API key needed.' : `API key roles: ${roles.join(', ')}.`
      const schema = out.schema as Record<string, unknown>
      // Carried to documentResponses, which moves it onto the responses.
      const headers = (input.route as { config?: { responseHeaders?: unknown } }).config?.responseHeaders
      return {
        ...out,
        schema: {
          ...schema,
          description: schema.description ? `${String(schema.description)}\n\n${line}` : line,
          'x-roles': roles,
          ...(headers ? { 'x-response-headers': headers } : {}),
        },
      }
    },
    transformObject: (input) => documentResponses(jsonSchemaTransformObject(input)),
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
}
