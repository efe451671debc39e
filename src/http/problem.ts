import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { AppError, ERRORS, PROBLEM_TYPE_BASE, isUnavailableError, type ErrorCode, type InvalidParam } from './errors.js'

/** The RFC 9457 body every error answer carries; published in the OpenAPI document. */
export const problemSchema = z
  .object({
    type: z.string().describe('A URI naming the kind of problem; its last segment is the stable error code'),
    title: z.string(),
    status: z.number().int(),
    detail: z.string().optional(),
    instance: z.string().optional().describe('`urn:request:` and the request id (the X-Request-Id header), to find the matching log lines'),
    code: z.string().describe('The stable error code, e.g. validation-failed'),
    invalidParams: z.array(z.object({ name: z.string(), reason: z.string() })).optional(),
  })
  .passthrough()
  .meta({ id: 'Problem' })

export type Problem = z.infer<typeof problemSchema>

function problem(code: ErrorCode, requestId: string, detail?: string, invalidParams?: InvalidParam[], extra?: Record<string, unknown>): Problem {
  const { status, title } = ERRORS[code]
  return {
    type: PROBLEM_TYPE_BASE + code,
    title,
    status,
    ...(detail ? { detail } : {}),
    instance: `urn:request:${requestId}`,
    code,
    ...(invalidParams?.length ? { invalidParams } : {}),
    ...extra,
  }
}

export function sendProblem(reply: FastifyReply, retryAfterSeconds: number, body: Problem): FastifyReply {
  if ((body.status === 503 || body.status === 429) && !reply.hasHeader('retry-after')) reply.header('retry-after', String(retryAfterSeconds))
  return reply.status(body.status).type('application/problem+json').send(body)
}

function pathOf(segments: ReadonlyArray<PropertyKey>, prefix: string): string {
  const tail = segments.map(String).join('.')
  return prefix ? (tail ? `${prefix}.${tail}` : prefix) : tail || '(body)'
}

/** The value at a path of the request part zod validated (undefined when any step is missing). */
function valueAt(source: unknown, segments: readonly string[]): unknown {
  let at = source
  for (const s of segments) {
    if (at === null || typeof at !== 'object') return undefined
    at = (at as Record<string, unknown>)[s]
  }
  return at
}

export function registerProblemHandlers(app: FastifyInstance, retryAfterSeconds: number): void {
  // No route runs the auth hook's no-store here, and the detail repeats the path (a call id).
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) =>
    sendProblem(reply.header('cache-control', 'no-store'), retryAfterSeconds, problem('not-found', req.id, `no route for ${req.method} ${req.url.split('?')[0]}`)),
  )

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      // The request part (body, querystring, params, headers) prefixes the field path, except for the body.
      const part = err.validationContext === 'body' ? '' : (err.validationContext ?? '')
      // (Fastify validates the querystring, and keeps it as req.query.)
      const parts: Record<string, unknown> = { body: req.body, querystring: req.query, params: req.params, headers: req.headers }
      const source = parts[err.validationContext ?? 'body']
      const invalidParams = err.validation.flatMap((v): InvalidParam[] => {
        const segments = v.instancePath.split('/').filter(Boolean)
        // zod calls a missing field one of the wrong type ("expected number, received undefined") or a
        // wrong option: say it is required, and what it takes.
        const missing = v.keyword === 'invalid_type' ? /expected (\w+), received undefined$/.exec(v.message ?? '') : null
        const options = v.keyword === 'invalid_value' && valueAt(source, segments) === undefined ? (v.params as { values?: unknown }).values : undefined
        const reason = missing
          ? `required (${missing[1]})`
          : Array.isArray(options)
            ? `required (one of ${options.map((o) => JSON.stringify(o)).join(', ')})`
            : (v.message ?? 'invalid')
        // An unknown field is named itself, not by the object that holds it.
        const keys = v.keyword === 'unrecognized_keys' ? (v.params as { keys?: unknown }).keys : undefined
        if (Array.isArray(keys) && keys.length) {
          return keys.map((k) => ({ name: pathOf([...segments, String(k)], part), reason: `unknown field "${String(k)}"` }))
        }
        return [{ name: pathOf(segments, part), reason }]
      })
      return sendProblem(reply, retryAfterSeconds, problem('validation-failed', req.id, `${invalidParams.length} invalid field(s)`, invalidParams))
    }
    if (err instanceof AppError) {
      if (err.status >= 500) req.log.warn({ err: { code: err.code, message: err.message } }, 'request failed')
      return sendProblem(reply, retryAfterSeconds, problem(err.code, req.id, err.detail, err.invalidParams, err.extra))
    }
    if (isUnavailableError(err)) {
      req.log.warn({ err: { code: (err as { code?: string }).code, message: err.message } }, 'backing service unavailable')
      return sendProblem(reply, retryAfterSeconds, problem('service-unavailable', req.id))
    }
    // Fastify's own client errors (body too large, bad JSON, wrong content type…).
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return sendProblem(reply, retryAfterSeconds, problem('payload-too-large', req.id, err.message))
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return sendProblem(reply, retryAfterSeconds, problem('unsupported-media-type', req.id, 'send application/json'))
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return sendProblem(reply, retryAfterSeconds, problem('validation-failed', req.id, 'the body did not match its Content-Length', [{ name: '(body)', reason: 'shorter or longer than its Content-Length' }]))
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return sendProblem(reply, retryAfterSeconds, problem('validation-failed', req.id, 'the body is not valid JSON', [{ name: '(body)', reason: 'not valid JSON' }]))
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      if (err instanceof SyntaxError) {
        return sendProblem(reply, retryAfterSeconds, problem('validation-failed', req.id, 'the body is not valid JSON', [{ name: '(body)', reason: 'not valid JSON' }]))
      }
      return sendProblem(reply, retryAfterSeconds, problem('validation-failed', req.id, err.message))
    }
    // Log the error's own fields only: pg errors can quote row values.
    req.log.error({ err: { name: err.name, code: err.code, message: err.message, stack: err.stack } }, 'unhandled error')
    return sendProblem(reply, retryAfterSeconds, problem('internal', req.id))
  })
}

/**
 * The routes' paths as registered (`/v1/calls/:callId`), by method: the router's 414 says only that
 * some path parameter was too long, and a client is owed its name, as any other problem gives.
 */
export interface RoutePaths {
  add(method: string | string[], url: string): void
  /** The names (`params.callId`) of the parameters longer than `max` in the routes `path` can be. */
  overlong(method: string, path: string, max: number): string[]
}

export function routePaths(): RoutePaths {
  const byMethod = new Map<string, string[][]>()
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      return s
    }
  }
  return {
    add(method, url) {
      for (const m of Array.isArray(method) ? method : [method]) {
        const list = byMethod.get(m) ?? []
        list.push(url.split('/'))
        byMethod.set(m, list)
      }
    },
    overlong(method, path, max) {
      const segments = path.split('/')
      const names = new Set<string>()
      for (const route of byMethod.get(method === 'HEAD' ? 'GET' : method) ?? []) {
        if (route.length !== segments.length) continue
        const found: string[] = []
        // Each segment is either the same text, or a parameter (`:name`, no regex in our routes).
        const fits = route.every((part, i) => {
          const given = segments[i]!
          if (!part.startsWith(':')) return part === given
          if (decode(given).length > max) found.push(`params.${part.slice(1)}`)
          return true
        })
        if (fits) for (const name of found) names.add(name)
      }
      return [...names]
    },
  }
}

/**
 * Errors Fastify's router raises before a route is found (a malformed URL, an over-long path
 * parameter): problem+json like every other error. A 414 names the parameter (never its value).
 */
export function frameworkErrorHandler(retryAfterSeconds: number, opts: { routes: RoutePaths; maxParamLength: number; headers: Readonly<Record<string, string>> }) {
  return (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    // No hook runs for these answers: the headers every other answer gets from one are set here,
    // and no-store, as on every answer of a route that needs a key (an error is no answer to keep).
    reply.headers({ ...opts.headers, 'x-request-id': String(req.id), 'cache-control': 'no-store' })
    if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
      const reason = `must be at most ${opts.maxParamLength} characters`
      const names = opts.routes.overlong(req.method, req.url.split('?')[0]!, opts.maxParamLength)
      const detail = names.length ? `${names.join(', ')} ${reason}` : `a path parameter is longer than ${opts.maxParamLength} characters`
      return sendProblem(reply, retryAfterSeconds, problem('uri-too-long', String(req.id), detail, names.map((name) => ({ name, reason }))))
    }
    const code: ErrorCode = err.code === 'FST_ERR_ASYNC_CONSTRAINT' ? 'internal' : 'validation-failed'
    return sendProblem(reply, retryAfterSeconds, problem(code, String(req.id), code === 'validation-failed' ? 'the URL is malformed' : undefined))
  }
}

/**
 * What Node's HTTP parser refuses before Fastify sees a request (bad framing, headers past 16 KB, a
 * request that never finished arriving): problem+json like every other error, written on the
 * socket, which then closes. Fastify's own answer is JSON of another shape. `headers`: those every
 * other answer carries (helmet's). The log line has the parser's code only: its error carries the
 * raw bytes, personal data included.
 */
export function clientErrorHandler(headers: Readonly<Record<string, string>>) {
  const fixed = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')
  return function (this: { log: FastifyBaseLogger } | void, err: Error & { code?: string }, socket: Socket): void {
    // A reset connection, or one already gone: nobody to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const id = randomUUID()
    const body =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? problem('request-timeout', id, 'the request did not arrive in full within the time allowed')
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? problem('headers-too-large', id, 'the request headers are larger than the server allows (16 KB unless set otherwise)')
          : problem('validation-failed', id, 'the request is not valid HTTP/1.1', [{ name: '(request)', reason: `refused by the HTTP parser (${err.code ?? 'no code'})` }])
    // Fastify calls it bound to the instance.
    if (this) this.log.debug({ code: err.code, requestId: id }, 'client error answered before any route')
    // As Node's own handler: not in the middle of an answer already under way on this connection
    // (a console's event stream, then bytes that are not HTTP), which raw bytes would corrupt.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage
    if (socket.writable && !inFlight?.headersSent) {
      const text = JSON.stringify(body)
      socket.write(
        `HTTP/1.1 ${body.status} ${STATUS_CODES[body.status]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nCache-Control: no-store\r\n${fixed}X-Request-Id: ${id}\r\nConnection: close\r\n\r\n${text}`,
      )
    }
    socket.destroy(err)
  }
}
