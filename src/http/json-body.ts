import type { FastifyInstance } from 'fastify'
import secureJsonParse from 'secure-json-parse'
import { AppError } from './errors.js'

/**
 * JSON bodies, parsed in place of Fastify's default parser, which accepted two things a 911 call
 * must not be stored with:
 *
 * - **A member given twice.** The last one won, silently: `"weapons": true, "weapons": false` in
 *   one body routed an armed person's call to CRU alone. Names must be unique (I-JSON, RFC 7493
 *   §2.3); the answer is 400 naming the member.
 * - **Bytes that are not UTF-8.** They became U+FFFD: a Latin-1 CAD's "René García" was stored as
 *   "Ren� Garc�a" and answered 201. JSON between systems is UTF-8 (RFC 8259 §8.1): another charset
 *   is 415, bytes that do not decode are 400. A byte order mark is ignored (§8.1 allows it).
 *
 * Prototype poisoning (`__proto__`, `constructor.prototype`) is refused as before. An empty body is
 * no body, as if the Content-Type had not been sent.
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body: Buffer, done) => {
    try {
      const charset = charsetOf(req.headers['content-type'])
      if (charset !== undefined && !UTF8.has(charset)) throw new AppError('unsupported-media-type', `send JSON in UTF-8 (charset=utf-8), not ${charset}`)
      let text: string
      try {
        text = utf8.decode(body)
      } catch {
        throw new AppError('validation-failed', 'the body is not UTF-8', { invalidParams: [{ name: '(body)', reason: 'bytes that are not UTF-8' }] })
      }
      // No body, whatever the header says: many clients send Content-Type on every POST. A route
      // whose body is optional (a console's acknowledge) takes it as none, one that needs a body
      // says so by its schema.
      if (!text.length) return done(null, undefined)
      let value: unknown
      try {
        value = secureJsonParse.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
      } catch {
        throw new AppError('validation-failed', 'the body is not valid JSON', { invalidParams: [{ name: '(body)', reason: 'not valid JSON' }] })
      }
      const twice = duplicateMember(text)
      if (twice !== undefined) throw new AppError('validation-failed', `${twice} is given twice`, { invalidParams: [{ name: twice, reason: 'given more than once in the same object; give it once' }] })
      done(null, value)
    } catch (err) {
      done(err as Error, undefined)
    }
  })
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
// ASCII is UTF-8's first 128 code points.
const UTF8 = new Set(['utf-8', 'utf8', 'us-ascii'])

/** The charset parameter of a Content-Type, lower case, or undefined without one. */
export function charsetOf(contentType: string | undefined): string | undefined {
  const m = contentType ? /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType) : null
  return m ? (m[1] ?? m[2] ?? '').toLowerCase() : undefined
}

interface Frame {
  /** An object's member names so far; undefined for an array. */
  names?: Set<string>
  /** The member being read (object) or the element's index (array): the path down to a duplicate. */
  at: string | number
}

/**
 * The path (`call.flags.weapons`, `incidentComponent.0.$id`) of the first member whose name its
 * object has already given, or undefined. `text` is JSON that JSON.parse accepted: one pass over
 * its structure, iterative (a deeply nested body cannot overflow the stack).
 */
export function duplicateMember(text: string): string | undefined {
  const frames: Frame[] = []
  let expectName = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const end = endOfString(text, i)
      const top = frames[frames.length - 1]
      if (expectName && top?.names) {
        const raw = text.slice(i + 1, end)
        // Escapes spell the same name differently ("weap\u006fns"); they are rare, so decode only then.
        const name = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw
        if (top.names.has(name)) return [...frames.slice(0, -1).map((f) => f.at), name].join('.')
        top.names.add(name)
        top.at = name
        expectName = false
      }
      i = end
    } else if (c === OPEN_BRACE) {
      frames.push({ names: new Set(), at: '' })
      expectName = true
    } else if (c === OPEN_BRACKET) {
      frames.push({ at: 0 })
      expectName = false
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      frames.pop()
      expectName = false
    } else if (c === COMMA) {
      const top = frames[frames.length - 1]!
      if (top.names) expectName = true
      else top.at = (top.at as number) + 1
    }
  }
  return undefined
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

/** The index of the quote that closes the string opening at `start`. */
function endOfString(text: string, start: number): number {
  for (let j = start + 1; j < text.length; j++) {
    const c = text.charCodeAt(j)
    if (c === BACKSLASH) j++
    else if (c === QUOTE) return j
  }
  return text.length
}
