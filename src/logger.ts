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

// Query strings are ours (queue, agency, cursor…), but cap them so nothing unbounded lands in a log.
function redactUrl(url: string): string {
  const safe = url.replace(PERSON_PATH, '$1[redacted]')
  return safe.length > 512 ? `${safe.slice(0, 512)}…` : safe
}
