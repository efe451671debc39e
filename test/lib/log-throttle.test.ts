import t from 'tap'
import { throttledWarn } from '../../src/lib/log-throttle.js'

t.test('a repeating warning is written once per interval per key, then says how many were left out', async (t) => {
  const lines: { obj: object; msg: string }[] = []
  let now = 0
  const warn = throttledWarn({ warn: (obj, msg) => lines.push({ obj, msg }) }, 30_000, () => now)
  // One every 80 ms for a minute, as six queue workers retrying a refused connection do.
  for (; now < 60_000; now += 80) warn('connect ECONNREFUSED', { queue: 'police' }, 'worker error')
  warn('another error', { queue: 'cru' }, 'worker error')
  t.same(
    lines.map((l) => l.obj),
    [{ queue: 'police' }, { queue: 'police', suppressed: 374 }, { queue: 'cru' }],
    'at 0 s, at 30 s with the count left out, and a different error at once',
  )
  now += 30_000
  warn('connect ECONNREFUSED', { queue: 'police' }, 'worker error')
  t.same(lines.at(-1)!.obj, { queue: 'police', suppressed: 374 }, 'the count since the last line written')
})
