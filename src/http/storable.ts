/**
 * What Postgres can store, checked at the edge: a request carrying a value the database would
 * refuse gets a 400 naming the field, never a 500 from the insert (or the lookup) it reaches.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { AppError } from './errors.js'

/** The largest value of a Postgres `integer` column (rule-set versions, for one). */
export const PG_INTEGER_MAX = 2_147_483_647

export const UNSTORABLE_TEXT = 'must not contain NUL characters or unpaired surrogates'

// Postgres text and jsonb cannot hold NUL (U+0000); jsonb (and json, which the repositories use to
// pass rows) refuses an unpaired UTF-16 surrogate, and text would silently turn it into U+FFFD.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

export const isStorableText = (s: string): boolean => !UNSTORABLE.test(s)

/**
 * Whether every string and field name in `value` can be stored: the answer for nearly every
 * request, found without building the path of each field (which cost more than the checks).
 */
function allStorable(value: unknown): boolean {
  const stack: unknown[] = [value]
  while (stack.length) {
    const v = stack.pop()
    if (typeof v === 'string') {
      if (!isStorableText(v)) return false
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item)
    } else if (v !== null && typeof v === 'object') {
      for (const key of Object.keys(v)) {
        if (!isStorableText(key)) return false
        stack.push((v as Record<string, unknown>)[key])
      }
    }
  }
  return true
}

/**
 * The names (dotted paths, as problem+json names fields: `call.description`, `params.callId`) of
 * every string and every field name in `value` that Postgres cannot store, in document order.
 */
export function unstorableTextFields(value: unknown, prefix = ''): string[] {
  if (allStorable(value)) return []
  const found: string[] = []
  const join = (path: string, key: string) => (path ? `${path}.${key}` : key)
  // Depth-first with a stack of our own, not recursion: a deeply nested body must not overflow the
  // call stack. Each entry is a value, its path, and the field name that leads to it (to check too).
  const stack: [unknown, string, string | undefined][] = [[value, prefix, undefined]]
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, path, key] = top
    if (key !== undefined && !isStorableText(key)) found.push(path)
    if (typeof v === 'string') {
      if (!isStorableText(v)) found.push(path || '(body)')
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], join(path, String(i)), undefined])
    } else if (v !== null && typeof v === 'object') {
      const entries = Object.entries(v)
      for (let i = entries.length - 1; i >= 0; i--) stack.push([entries[i]![1], join(path, entries[i]![0]), entries[i]![0]])
    }
  }
  return found
}

/**
 * Refuses every request whose path parameters, query string or body hold text Postgres cannot
 * store. One check for every route, field and field name — rather than a refinement repeated in
 * each schema — so that a field or route added later cannot forget it, and documents stored whole
 * (a rule set, the fields of an EIDO component) are covered too. It runs after schema validation
 * (a request with other mistakes hears about those first) and before any handler touches the
 * database.
 */
export function refuseUnstorableText(app: FastifyInstance): void {
  app.addHook('preHandler', async (req) => {
    const names = [...unstorableTextFields(req.params, 'params'), ...unstorableTextFields(req.query, 'querystring'), ...unstorableTextFields(req.body)]
    if (names.length) {
      throw new AppError('validation-failed', `${names.length} invalid field(s)`, { invalidParams: names.map((name) => ({ name, reason: UNSTORABLE_TEXT })) })
    }
  })
}

// Postgres's timestamptz reaches back to 4713 BC, but neither its input syntax nor JSON (which the
// repositories use to pass rows) speak year 0, which RFC 3339 allows — and the service looks back
// from a given instant (30 days of history, a report's default range), so an instant in year 1
// would still lead to year 0. No call, decision or report predates 1900; RFC 3339 stops at 9999.
const FIRST_INSTANT = Date.parse('1900-01-01T00:00:00Z')
const LAST_INSTANT = Date.parse('9999-12-31T23:59:59.999Z')

// Postgres refuses date-time text past about 150 characters, and offsets past ±15:59 (RFC 3339
// allows 23:59; offsets in use span -12:00 to +14:00): either would be its error, a 500. Nine
// fractional digits (nanoseconds) are as fine as any clock; Postgres keeps six.
const MAX_FRACTION_DIGITS = 9

// RFC 3339 §5.6 (and JSON Schema's date-time) let the `T` separator and the `Z` zone be lower case;
// zod's date-time check does not. The documented pattern is zod's own with both cases allowed, the
// fraction and the offset bounded as above.
const RFC3339_PATTERN = (() => {
  const zods = z.toJSONSchema(z.iso.datetime({ offset: true })).pattern
  const fraction = '(?:\\.\\d+)?'
  const offsetHour = '[+-](?:[01]\\d|2[0-3])'
  if (typeof zods !== 'string' || [zods.split('T'), zods.split('Z'), zods.split(fraction), zods.split(offsetHour)].some((parts) => parts.length !== 2)) {
    throw new Error('unexpected zod date-time pattern')
  }
  return zods
    .replace('T', '[Tt]')
    .replace('Z', '[Zz]')
    .replace(fraction, `(?:\\.\\d{1,${MAX_FRACTION_DIGITS}})?`)
    .replace(offsetHour, '[+-](?:0\\d|1[0-5])')
})()

/**
 * An RFC 3339 date-time with an offset, from 1900 to 9999 once converted to UTC, with at most nine
 * fractional digits and an offset within ±15:59. A lower-case `t` or `z` is accepted and raised, so
 * what handlers see, store and hash is one spelling.
 */
export const instant = z
  .string()
  .overwrite((s) => s.toUpperCase())
  .pipe(
    z.iso
      .datetime({ offset: true })
      .refine((s) => {
        const t = Date.parse(s)
        // Not a date-time at all: the format check names it.
        return Number.isNaN(t) || (t >= FIRST_INSTANT && t <= LAST_INSTANT)
      }, 'must be between 1900-01-01T00:00:00Z and 9999-12-31T23:59:59Z')
      .refine((s) => (/\.(\d+)/.exec(s)?.[1]?.length ?? 0) <= MAX_FRACTION_DIGITS, `must have at most ${MAX_FRACTION_DIGITS} fractional digits`)
      .refine((s) => !/[+-]\d{2}:\d{2}$/.test(s) || Number(s.slice(-5, -3)) <= 15, 'must have an offset between -15:59 and +15:59'),
  )
  .meta({ format: 'date-time', pattern: RFC3339_PATTERN })
