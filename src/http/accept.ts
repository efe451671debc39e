import Negotiator from 'negotiator'

/**
 * Which of `offered` the request's Accept prefers: by q-value, then the most specific range, then
 * the order the client listed them in (jshttp's negotiator, as Express has it). The first offered
 * when there is no Accept, or when it accepts none of them: JSON, as every route answers by default.
 * A range's parameters other than q are not matched (`text/csv; header=present`, `charset=utf-8`):
 * every answer is UTF-8, and a CSV has its header row.
 */
export function preferredType<T extends string>(accept: string | undefined, offered: readonly [T, ...T[]]): T {
  if (!accept) return offered[0]
  const ranges = accept
    .split(',')
    .map((range) => {
      const [type, ...params] = range.split(';')
      const q = params.find((p) => /^\s*q\s*=/i.test(p))
      return q ? `${type};${q}` : type
    })
    .join(',')
  return (new Negotiator({ headers: { accept: ranges } }).mediaType([...offered]) as T | undefined) ?? offered[0]
}
