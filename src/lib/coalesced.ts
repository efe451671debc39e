/**
 * `fn` one run at a time, without losing a call: a call made while a run is in flight gets one more
 * run after it (however many such calls there were), because what it was made for may have happened
 * after the run in flight read. Each call's promise settles with the first run that began after it.
 */
export function coalesced(fn: () => Promise<void>): () => Promise<void> {
  let current: Promise<void> | undefined
  let next: Promise<void> | undefined
  const call = (): Promise<void> => {
    if (!current) {
      current = fn().finally(() => {
        current = undefined
      })
      return current
    }
    next ??= current
      .catch(() => {})
      .then(() => {
        next = undefined
        return call()
      })
    return next
  }
  return call
}
