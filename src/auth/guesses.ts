/**
 * Refused API keys per client address. A well-formed key the cache does not hold costs a Postgres
 * lookup on the pool ingest needs, so a client that keeps presenting unknown keys (guessing, or a
 * misconfigured one in a loop) could keep that pool busy. After `limit` refusals within a window,
 * its keys that the cache does not already hold are refused with 429 and not looked up until the
 * window ends. Keys the cache holds still pass: a console behind the same address keeps working.
 * Per process: each API instance counts what it sees.
 */
export interface GuessLimiter {
  /** Milliseconds until this address may have unknown keys looked up again; 0 when it may now. */
  blockedFor(address: string): number
  /** A key from this address was refused. */
  refused(address: string): void
}

export function createGuessLimiter(opts: { limit: number; windowMs?: number; maxAddresses?: number; clock?: () => number }): GuessLimiter {
  const windowMs = opts.windowMs ?? 60_000
  const maxAddresses = opts.maxAddresses ?? 10_000
  const clock = opts.clock ?? (() => performance.now())
  // Address → its window; a Map iterates in insertion order, so the oldest windows go first.
  const windows = new Map<string, { start: number; count: number }>()
  const current = (address: string) => {
    const w = windows.get(address)
    return w && clock() - w.start < windowMs ? w : undefined
  }
  return {
    blockedFor(address) {
      const w = current(address)
      return w && w.count >= opts.limit ? Math.max(1, Math.ceil(w.start + windowMs - clock())) : 0
    },
    refused(address) {
      const w = current(address)
      if (w) {
        w.count++
        return
      }
      windows.delete(address)
      windows.set(address, { start: clock(), count: 1 })
      while (windows.size > maxAddresses) windows.delete(windows.keys().next().value as string)
    },
  }
}
