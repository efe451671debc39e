/**
 * The feed hub's read gap (FEED_READ_GAP_MS): under a stream of wake-ups it reads Postgres at most
 * once per gap, and a change committed meanwhile still reaches its listeners within about a gap.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test as Tap } from 'tap'
import { createFeedHub, type FeedBatch } from '../../src/assignments/feed.js'
import { createDb, createPool } from '../../src/db/connect.js'
import { callEvent } from '../helpers/events.js'
import { countStatements, createWorld, eventually, quietLog, say } from '../helpers/world.js'

const world = await createWorld(t)

/** A hub on a pool of its own whose reads (one horizon per read) are counted. */
function countedHub(minGapMs: number) {
  const pool = createPool({ connectionString: world.databaseUrl, max: 1, statementTimeoutMs: 5000 })
  const reads = countStatements(pool, 'pg_snapshot_xip')
  const db = createDb(pool)
  const hub = createFeedHub({ db, log: quietLog, pollMs: 60_000, minGapMs })
  t.teardown(async () => {
    hub.stop()
    await db.destroy()
  })
  return { hub, reads }
}

/** Wakes the hubs together every 2 ms for `ms`; the reads each made meanwhile. */
async function wakeFor(t: Tap, hubs: ReturnType<typeof countedHub>[], ms: number): Promise<number[]> {
  for (const h of hubs) {
    h.hub.start()
    t.ok(await h.hub.ready(5000), 'the hub has a position')
  }
  await sleep(50)
  const before = hubs.map((h) => h.reads())
  const until = performance.now() + ms
  while (performance.now() < until) {
    for (const h of hubs) h.hub.wake()
    await sleep(2)
  }
  await sleep(100)
  return hubs.map((h, i) => h.reads() - before[i]!)
}

t.test('a stream of wake-ups: one read per gap, not one per wake-up', async (t) => {
  // Both hubs at the same time, so that a loaded machine slows both alike. Without the gap, reads are
  // bounded only by how fast a read goes (printed for comparison; on a loaded machine a read may take
  // a whole gap, so the two counts are not compared). What the gap promises is the bound.
  const [gapped, eager] = (await wakeFor(t, [countedHub(100), countedHub(0)], 500)) as [number, number]
  say(`500 ms of wake-ups every 2 ms: ${gapped} reads with a 100 ms gap, ${eager} without`)
  t.ok(gapped >= 1, `it reads (${gapped})`)
  t.ok(gapped <= 7, `at most one read per 100 ms (${gapped})`)
})

t.test('a change committed between reads reaches the listeners within about a gap', async (t) => {
  const { hub } = countedHub(100)
  hub.start()
  t.ok(await hub.ready(5000))
  const batches: FeedBatch[] = []
  hub.listen((b) => batches.push(b))
  hub.wake() // a read now: the next wake-up falls inside the gap
  const res = await world.app.inject({ method: 'POST', url: '/v1/call-events', payload: callEvent({ agency: 'gap-pd', natureCode: 'NOISE' }) })
  t.equal(res.statusCode, 201)
  const woken = performance.now()
  hub.wake()
  await eventually(async () => batches.some((b) => b.events.some((e) => e.agency === 'gap-pd')), 5000, 5)
  const took = Math.round(performance.now() - woken)
  // A wake-up dropped inside the gap would leave the change to the 60 s poll: 5 s tells the two
  // apart with room for a loaded machine (which can pause this process for a second or more).
  t.ok(took < 5000, `delivered ${took} ms after its wake-up`)
})
