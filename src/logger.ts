import type { LoggerOptions } from 'pino'

/** Fields that carry personal data wherever they appear in a logged object. */
const PERSONAL_FIELDS = ['caller', 'subject', 'description', 'location', 'address', 'name', 'phone', 'birthDate']

// fast-redact has no recursive wildcard, so cover the depths our objects reach.
const redactPaths = PERSONAL_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`, `*.*.*.${f}`])

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    // Never log request or response bodies: they carry caller and subject data.
    serializers: {
      req: (req: { method: string; url: string; id: string }) => ({ method: req.method, url: redactUrl(req.url), id: req.id }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      err: serializeError,
    },
  }
}

// The names (never values) a Postgres error adds that help an operator find what failed.
const PG_ERROR_NAMES = ['constraint', 'table', 'column', 'schema', 'routine'] as const

/**
 * An error as a log line may hold it: its type, message, code and stack, and a Postgres error's
 * constraint, table and column names. Nothing else: Node's HTTP parse error carries the raw
 * request (`rawPacket`: body and Authorization header included), a Postgres error quotes values in
 * `detail` and `where`. A `cause` that is an Error is logged the same way. (A Buffer also made the
 * redaction throw.)
 */
export function serializeError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error)) return err
  const e = err as Error & Record<string, unknown>
  const out: Record<string, unknown> = { type: e.constructor.name, message: e.message, stack: e.stack }
  if (typeof e.code === 'string' || typeof e.code === 'number') out.code = e.code
  for (const k of PG_ERROR_NAMES) if (typeof e[k] === 'string') out[k] = e[k]
  // A migration's error wraps Postgres's: its cause, under the same rule (a few levels, a cycle ends).
  if (e.cause instanceof Error && depth < 3) out.cause = serializeError(e.cause, depth + 1)
  return out
}

// The path segment after `case-links` is a county person id (personal data, like call.subject):
// /v1/case-links/<id>, however the rest of the path is written (`//v1/…` reaches the not-found
// handler, and is logged too), and however `case-links` is escaped (`case%2Dlinks`: the router
// decodes it). A person id may itself hold an escaped `/`, `?` or `#`: the whole raw segment goes.
const PERSON_SEGMENT = 'case-links'

/**
 * Query parameters whose values are logged as sent: our routes' own, which name queues, agencies,
 * statuses, cursors and times. Not `targetId` (a person id when targetType=person), nor any name our
 * routes do not read: what a client sends under it is unknown, so its value is redacted.
 * (test/auth/privacy.test.ts checks this against the OpenAPI document.)
 */
export const LOGGED_QUERY_PARAMETERS: ReadonlySet<string> = new Set([
  'action', 'actor', 'agency', 'before', 'bucket', 'cursor', 'from', 'keyId', 'lastEventId', 'limit', 'overdue', 'queue', 'repeatThreshold', 'status', 'targetType', 'timeZone', 'to', 'version', 'wait',
])
// A logged value is one of ours in shape too: `targetType=person;targetId=P-…` is one value to the parser.
const PLAIN_VALUE = /^[A-Za-z0-9_.:,+-]*$/

/**
 * A request URL as it may be written to a log line or a trace span: person ids and unknown query
 * values redacted, and capped so nothing unbounded lands there.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?')
  const path = redactPath(q < 0 ? url : url.slice(0, q))
  const query = q < 0 ? '' : `?${url.slice(q + 1).split('&').map(redactParam).join('&')}`
  const safe = path + query
  return safe.length > 512 ? `${safe.slice(0, 512)}…` : safe
}

// As sent, but the raw segment after one that reads `case-links` once decoded is `[redacted]`.
// Each segment is decoded on its own: a malformed escape in one leaves the others readable.
function redactPath(raw: string): string {
  const segments = raw.split('/')
  for (let i = 0; i < segments.length; i++) {
    const readable = decoded(segments[i]!, { plusIsSpace: false }).toLowerCase()
    if (readable === PERSON_SEGMENT && i + 1 < segments.length) segments[i + 1] = '[redacted]'
    // `case-links%2F<id>` is one raw segment (a 404, but logged): it goes whole.
    else if (readable.includes(`${PERSON_SEGMENT}/`)) segments[i] = '[redacted]'
  }
  return segments.join('/')
}

// Names are compared decoded, as the query parser reads them (`target%49d` is `targetId`). A name
// our routes do not read may itself be anything (`?P-104233`): it goes with its value.
function redactParam(pair: string): string {
  if (!pair.length) return pair
  const eq = pair.indexOf('=')
  const name = decoded(eq < 0 ? pair : pair.slice(0, eq))
  const logged = LOGGED_QUERY_PARAMETERS.has(name)
  if (!logged && name !== 'targetId') return '[redacted]'
  if (eq < 0) return pair
  return logged && PLAIN_VALUE.test(decoded(pair.slice(eq + 1))) ? pair : `${pair.slice(0, eq)}=[redacted]`
}

// A query string reads `+` as a space; a path does not.
function decoded(text: string, o: { plusIsSpace: boolean } = { plusIsSpace: true }): string {
  try {
    return decodeURIComponent(o.plusIsSpace ? text.replace(/\+/g, ' ') : text)
  } catch {
    // A malformed escape: the parsers keep it as written, and so do we.
    return text
  }
}
