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
    },
  }
}

// Paths whose segment is a county person id (personal data, like call.subject).
const PERSON_PATH = /^(\/v1\/case-links\/)[^/?#]+/
// Query parameters that may hold one: the audit log's `targetId` is a person id when targetType=person.
const PERSON_QUERY = new Set(['targetId'])

/**
 * A request URL as it may be written to a log line or a trace span: person ids redacted, and capped
 * so nothing unbounded lands there. The rest of a query string is ours (queue, agency, cursor…).
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?')
  const path = (q < 0 ? url : url.slice(0, q)).replace(PERSON_PATH, '$1[redacted]')
  const query = q < 0 ? '' : `?${url.slice(q + 1).split('&').map(redactParam).join('&')}`
  const safe = path + query
  return safe.length > 512 ? `${safe.slice(0, 512)}…` : safe
}

// Names are compared decoded, as the query parser reads them (`target%49d` is `targetId`).
function redactParam(pair: string): string {
  const eq = pair.indexOf('=')
  const name = eq < 0 ? pair : pair.slice(0, eq)
  let decoded = name
  try {
    decoded = decodeURIComponent(name.replace(/\+/g, ' '))
  } catch {
    // Not `targetId` to the query parser either, which keeps a malformed escape as written.
  }
  return PERSON_QUERY.has(decoded) && eq >= 0 ? `${name}=[redacted]` : pair
}
