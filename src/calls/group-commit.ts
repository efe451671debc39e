/**
 * Group commit: concurrent ingests share one transaction, so a busy 911 center pays one commit
 * and a handful of round trips per batch instead of per event, while every caller still gets its
 * answer only after its own event has committed.
 *
 * Batches form by themselves: whatever arrived while the previous batch was in flight goes in the
 * next one, so a lone event on an idle service waits for nothing (with `holdMs`, one that arrives
 * beside a young batch waits for it, at most `holdMs`). Items that share a key (the same call, the
 * same eventId) never run at the same time, and run in the order they arrived.
 */

/** What the batch did with one item. */
export type Settlement<R> =
  | { value: R }
  | { error: unknown }
  /**
   * Run it again in a later batch; `alone`: in a batch of its own (to isolate a failure);
   * `uncounted`: the item did nothing wrong (it shared a batch with one that failed, which is
   * answered), so this run does not count against maxAttempts.
   */
  | { retry: true; alone?: boolean; uncounted?: boolean }

export interface GroupCommitOptions<T, R> {
  /** Items with a key in common are serialised, in arrival order. */
  keys(item: T): readonly string[]
  /** Settles every item, in order; a throw fails the whole batch with that error. */
  run(items: T[]): Promise<Settlement<R>[]>
  maxBatch: number
  /** Batches in flight at once (each holds a database connection). */
  concurrency: number
  /**
   * Another batch starts beside running ones only once the youngest of them has run this long, or
   * when a full batch could start: until then arrivals gather into the next batch, which costs less
   * per item than two small ones. The extra batches are for one that is stuck (a lock held
   * elsewhere), not for spreading a light load. 0: start at once.
   */
  holdMs?: number
  /** Items waiting beyond this are refused at once with `overloaded()`: a bounded queue, not a growing one. */
  maxQueued: number
  overloaded(): Error
  /** A batch settles an item this many times at most with `retry` before giving up with `gaveUp()`. */
  maxAttempts?: number
  gaveUp?(): Error
  onBatch?(size: number): void
}

interface Entry<T, R> {
  seq: number
  item: T
  keys: readonly string[]
  alone: boolean
  attempts: number
  resolve(value: R): void
  reject(err: unknown): void
}

export function createGroupCommit<T, R>(opts: GroupCommitOptions<T, R>) {
  const maxAttempts = opts.maxAttempts ?? 3
  let queue: Entry<T, R>[] = []
  const busy = new Set<string>()
  let seq = 0
  let scheduled = false
  const holdMs = opts.holdMs ?? 0
  /** When each batch in flight started (performance.now()): one entry per running batch. */
  const starts: number[] = []
  let holdTimer: NodeJS.Timeout | undefined

  function submit(item: T): Promise<R> {
    if (queue.length >= opts.maxQueued) return Promise.reject(opts.overloaded())
    return new Promise<R>((resolve, reject) => {
      queue.push({ seq: seq++, item, keys: opts.keys(item), alone: false, attempts: 0, resolve, reject })
      schedule()
    })
  }

  // Start batches after the current I/O callbacks: requests read in the same turn share a batch.
  function schedule(): void {
    if (scheduled) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      pump()
    })
  }

  function pump(): void {
    clearTimeout(holdTimer)
    holdTimer = undefined
    while (starts.length < opts.concurrency) {
      const batch = next()
      if (!batch.length) break
      const wait = starts.length && batch.length < opts.maxBatch ? Math.max(...starts) + holdMs - performance.now() : 0
      if (wait > 0) {
        // Not unref'd: items are waiting for this, and shutdown waits for their answers.
        holdTimer = setTimeout(pump, wait)
        break
      }
      take(batch)
      const start = performance.now()
      starts.push(start)
      void execute(batch, start)
    }
  }

  /** The next batch, not yet taken: oldest first, skipping (and keeping in order behind) anything whose key is taken. */
  function next(): Entry<T, R>[] {
    const batch: Entry<T, R>[] = []
    const blocked = new Set<string>()
    for (const e of queue) {
      const free = batch.length < opts.maxBatch && !e.keys.some((k) => busy.has(k) || blocked.has(k)) && (!e.alone || !batch.length) && !batch[0]?.alone
      if (free) batch.push(e)
      for (const k of e.keys) blocked.add(k)
    }
    return batch
  }

  function take(batch: Entry<T, R>[]): void {
    const taken = new Set(batch)
    queue = queue.filter((e) => !taken.has(e))
    for (const e of batch) for (const k of e.keys) busy.add(k)
  }

  async function execute(batch: Entry<T, R>[], start: number): Promise<void> {
    let settled: Settlement<R>[]
    try {
      opts.onBatch?.(batch.length)
      settled = await opts.run(batch.map((e) => e.item))
      // Every item must be settled, or its caller would wait forever.
      if (settled.length !== batch.length || batch.some((_, i) => !settled[i])) throw new Error(`group commit: not every item of the batch was settled`)
    } catch (err) {
      settled = batch.map(() => ({ error: err }))
    }
    for (const e of batch) for (const k of e.keys) busy.delete(k)
    starts.splice(starts.indexOf(start), 1)
    const again: Entry<T, R>[] = []
    batch.forEach((e, i) => {
      const s = settled[i]!
      if ('value' in s) e.resolve(s.value)
      else if ('error' in s) e.reject(s.error)
      else if (!s.uncounted && ++e.attempts >= maxAttempts) e.reject(opts.gaveUp?.() ?? new Error('group commit: gave up after retries'))
      else {
        if (s.alone) e.alone = true
        again.push(e)
      }
    })
    if (again.length) queue = [...again, ...queue].sort((a, b) => a.seq - b.seq)
    pump()
  }

  return { submit }
}
