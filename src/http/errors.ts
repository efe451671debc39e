import { PostgresSilentError } from '../db/silent-queries.js'

/**
 * The one error catalog. Each error has a stable code (the last segment of its problem `type`),
 * an HTTP status and a title. The error handler turns them into application/problem+json (RFC 9457).
 */
export const ERRORS = {
  'validation-failed': { status: 400, title: 'The request is not valid' },
  unauthorized: { status: 401, title: 'A valid API key is required' },
  forbidden: { status: 403, title: 'This API key may not do this' },
  'not-found': { status: 404, title: 'Not found' },
  'event-conflict': { status: 409, title: 'This eventId was already used with a different body' },
  'illegal-transition': { status: 409, title: 'The assignment cannot make this move from its current status' },
  'call-closed': { status: 409, title: 'The call is closed' },
  'rule-set-conflict': { status: 409, title: 'The rule set cannot make this change from its current state' },
  'verification-failed': { status: 422, title: 'The rule set failed verification' },
  'payload-too-large': { status: 413, title: 'The request body is too large' },
  'uri-too-long': { status: 414, title: 'A path segment is too long' },
  'request-timeout': { status: 408, title: 'The request did not arrive in time' },
  'headers-too-large': { status: 431, title: 'The request headers are too large' },
  'rate-limited': { status: 429, title: 'Too many requests for this API key; retry later' },
  'unsupported-media-type': { status: 415, title: 'Unsupported content type' },
  'service-unavailable': { status: 503, title: 'A backing service is unavailable; retry later' },
  internal: { status: 500, title: 'Internal error' },
} as const

export type ErrorCode = keyof typeof ERRORS

export const PROBLEM_TYPE_BASE = 'https://cad-router.dev/problems/'

export interface InvalidParam {
  /** JSON-pointer-like dotted path of the field, e.g. `call.priority`. */
  name: string
  reason: string
}

export class AppError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly detail: string | undefined
  readonly invalidParams: InvalidParam[] | undefined
  readonly extra: Record<string, unknown> | undefined

  constructor(
    code: ErrorCode,
    detail?: string,
    opts: { invalidParams?: InvalidParam[]; extra?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(detail ?? ERRORS[code].title, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'AppError'
    this.code = code
    this.status = ERRORS[code].status
    this.detail = detail
    this.invalidParams = opts.invalidParams
    this.extra = opts.extra
  }
}

export const notFound = (what: string) => new AppError('not-found', `${what} not found`)

export const LOCK_NOT_AVAILABLE = '55P03'

/**
 * An error Postgres answered with (a SQLSTATE), about the statement, not the connection: lock and
 * statement time-outs, deadlocks and the like. A sweep counts one and goes on with its other rows;
 * anything else (Postgres unreachable, a bug) ends the sweep.
 */
export function isRefusedByPostgres(err: unknown): boolean {
  return /^(?:55|57014|40)[0-9A-Z]*$/.test(String((err as { code?: unknown } | null)?.code))
}

const READ_ONLY_TRANSACTION = '25006'

/** Errors that mean Postgres or Redis cannot be reached or answered too late: the client should retry. */
export function isUnavailableError(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const e = err as Error & { code?: string }
  const code = e.code ?? ''
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN'].includes(code)) return true
  // Postgres SQLSTATE classes: 08 connection exception, 53 insufficient resources (disk full, out of
  // memory, too many connections), 57 operator intervention (admin shutdown, statement timeout 57014).
  if (/^(08|53|57)[0-9A-Z]{3}$/.test(code)) return true
  // 55P03 lock_not_available: waited past the lock timeout for a row or table another transaction holds.
  if (code === LOCK_NOT_AVAILABLE) return true
  // No answer from Postgres within DATABASE_QUERY_TIMEOUT_MS (a network that drops packets): the connection was dropped.
  if (err instanceof PostgresSilentError) return true
  // 25006 read_only_sql_transaction: a standby (mid-failover) or a primary set read-only answers but
  // cannot write; the write may succeed on the new primary, so the client retries.
  if (code === READ_ONLY_TRANSACTION) return true
  if (/timeout exceeded when trying to connect|Connection terminated|connection timeout|Client has encountered a connection error/i.test(e.message)) return true
  // Redis (ioredis) not answering: no connection and no offline queue, retries used up, the
  // command time-out, the connection closed under the command; and the API's breaker refusing.
  if (e.name === 'MaxRetriesPerRequestError' || e.name === 'RedisUnavailable') return true
  if (/^(Stream isn't writeable and enableOfflineQueue options is false|Command timed out|Connection is closed\.)$/.test(e.message)) return true
  return false
}
