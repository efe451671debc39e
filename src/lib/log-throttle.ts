/**
 * A warning that can repeat many times a second (a worker's Redis connection refused, for each
 * queue, at every retry) is written once per `everyMs` for each key; the next line written says how
 * many were left out since. What is counted elsewhere (cad_router_worker_errors_total) stays exact.
 */
export function throttledWarn(
  log: { warn: (obj: object, msg: string) => void },
  everyMs: number,
  clock: () => number = () => performance.now(),
): (key: string, obj: object, msg: string) => void {
  const last = new Map<string, { at: number; suppressed: number }>()
  return (key, obj, msg) => {
    const now = clock()
    const seen = last.get(key)
    if (seen && now - seen.at < everyMs) {
      seen.suppressed++
      return
    }
    log.warn(seen?.suppressed ? { ...obj, suppressed: seen.suppressed } : obj, msg)
    last.set(key, { at: now, suppressed: 0 })
    // Keys that carry ids (BullMQ's "could not renew lock for job <id>") never repeat: forget what
    // is past its interval with nothing left to report, so the map stays about as small as the
    // errors of the last interval.
    if (last.size > 100) for (const [k, v] of last) if (now - v.at >= everyMs && !v.suppressed) last.delete(k)
  }
}
