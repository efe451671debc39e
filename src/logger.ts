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

// Query strings are ours (queue, agency, cursor…), but cap them so nothing unbounded lands in a log.
function redactUrl(url: string): string {
  return url.length > 512 ? `${url.slice(0, 512)}…` : url
}
