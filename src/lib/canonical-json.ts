import { createHash } from 'node:crypto'

/** JSON with object keys sorted at every depth, so equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>
      return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]))
    }
    return v
  })
}

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')
