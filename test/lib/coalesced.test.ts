import t from 'tap'
import { coalesced } from '../../src/lib/coalesced.js'

/** A run that reads a value, then waits for the test to let it finish. */
function reader() {
  let value = 0
  const reads: number[] = []
  const finishers: Array<() => void> = []
  const run = coalesced(async () => {
    reads.push(value)
    await new Promise<void>((r) => finishers.push(r))
  })
  return {
    run,
    reads,
    set: (v: number) => void (value = v),
    finish: async () => {
      finishers.shift()?.()
      // Let the run's settlement and any run it starts reach their first await.
      await new Promise((r) => setImmediate(r))
    },
  }
}

t.test('a call while a run is in flight gets a run that starts after it', async (t) => {
  const r = reader()
  const first = r.run()
  r.set(1) // the change happens after the first run read
  const second = r.run()
  t.same(r.reads, [0], 'one run at a time')
  await r.finish()
  await first
  t.same(r.reads, [0, 1], 'the run for the second call began once the first ended, and read the change')
  await r.finish()
  await second
})

t.test('any number of calls during a run make one more run, not one each', async (t) => {
  const r = reader()
  void r.run()
  const waiting = [r.run(), r.run(), r.run()]
  await r.finish()
  await r.finish()
  await Promise.all(waiting)
  t.equal(r.reads.length, 2)
  void r.run()
  t.equal(r.reads.length, 3, 'a call after everything has settled runs at once')
  await r.finish()
})

t.test('a run that fails does not stop the next one', async (t) => {
  let calls = 0
  let fail!: (e: Error) => void
  const run = coalesced(() => {
    calls++
    return calls === 1 ? new Promise<void>((_, reject) => (fail = reject)) : Promise.resolve()
  })
  const first = run()
  const second = run()
  fail(new Error('Postgres away'))
  await t.rejects(first, { message: 'Postgres away' })
  await second
  t.equal(calls, 2)
})
