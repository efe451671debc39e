import Negotiator from 'negotiator'

/**
 * Which of `offered` the request's Accept prefers: by q-value, then the most specific range, then
 * the order the client listed them in (jshttp's negotiator, as Express has it). The first offered
 * when there is no Accept, or when it accepts none of them: JSON, as every route answers by default.
 */
export function preferredType<T extends string>(accept: string | undefined, offered: readonly [T, ...T[]]): T {
  if (!accept) return offered[0]
  return (new Negotiator({ headers: { accept } }).mediaType([...offered]) as T | undefined) ?? offered[0]
}
