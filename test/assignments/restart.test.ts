import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { serviceEntry } from '../helpers/service-process.js'
import { createWorld, eventually, REDIS_URL } from '../helpers/world.js'
import { helpers } from './fixtures/pipeline.js'

// The deadline has to outlive the first worker process; the sweep is out of reach, so only the
// delayed job in Redis can escalate.
const DEADLINE_S = 4
const world = await createWorld(t)
const { post, call, until } = helpers(world)
const children = new Set<ChildProcess>()
t.teardown(() => {
  for (const c of children) c.kill('SIGKILL')
})

/** The service (see serviceEntry) as the relay and worker roles, in a process of its own. */
async function startWorkerProcess(): Promise<ChildProcess> {
  const child = spawn(process.execPath, serviceEntry(), {
    env: {
      PATH: process.env.PATH,
      ROLE: 'relay,worker',
      DATABASE_URL: world.databaseUrl,
      REDIS_URL,
      BULLMQ_PREFIX: world.prefix,
      ACK_DEADLINES: `cru=${DEADLINE_S},police=${DEADLINE_S}`,
      LIFECYCLE_SWEEP_MS: '600000',
      RELAY_POLL_MS: '200',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.add(child)
  child.on('exit', () => children.delete(child))
  let out = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker process not ready: ${out}`)), 60_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('responder and lifecycle workers started') && out.includes('outbox relay started')) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.on('exit', (code) => reject(new Error(`worker process exited with ${code}: ${out}`)))
  })
  return child
}

t.test('an escalation survives kill -9 of the worker process while it waits', async (t) => {
  const first = await startWorkerProcess()
  const created = await post({ natureCode: 'EDP', agency: 'restart-pd' })
  const cru = created.decision.assignments[0]!
  const offered = await until(cru.id, 'offered', 30_000)
  // The deadline job is added just after the offer commits: kill once it is in Redis. (A kill in
  // between is the sweep's to catch, or the offer job's retry once its lock lapses — not this test.)
  await eventually(async () => (await world.redis.exists(`${world.prefix}:lifecycle:ack-${cru.id}`)) === 1, 10_000, 5)
  first.kill('SIGKILL')
  await once(first, 'exit')
  t.ok(Date.now() < offered.ack_deadline_at!.getTime(), 'killed before the deadline')
  t.equal((await call(created.callId)).assignments.length, 1, 'nothing escalated yet')

  const second = await startWorkerProcess()
  await until(cru.id, 'escalated', 30_000)
  const history = (await call(created.callId)).assignments
  const last = history.find((a) => a.id === cru.id)!.transitions.at(-1)!
  t.equal(last.actor, 'system:ack-deadline', 'the delayed job did it, not the sweep')
  t.ok(new Date(last.at).getTime() >= offered.ack_deadline_at!.getTime(), 'not before the deadline')
  const police = history.find((a) => a.queue === 'police')!
  t.ok(police, 'escalated to co-response')
  // The new assignments went through the outbox to the second process's workers.
  await until(police.id, 'offered', 30_000)
  second.kill('SIGTERM')
  const [code] = await once(second, 'exit')
  t.equal(code, 0, 'a graceful stop exits 0')
})
