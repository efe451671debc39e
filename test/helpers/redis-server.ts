import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Redis } from 'ioredis'

interface Tap {
  teardown(fn: () => unknown): void
}

export interface ThrowawayRedis {
  port: number
  url: string
  /** SIGKILL: no shutdown, no save — the way a crashed or unplugged Redis goes. Resolves once the process is gone. */
  kill(): Promise<void>
  /** SIGSTOP: the process stays, its connections stay open, and nothing answers (a hung Redis); `resume` is SIGCONT. */
  pause(): void
  resume(): void
  /**
   * Starts redis-server again on the same port; resolves once it answers PING. Without `aof` it
   * starts empty; with it, it reloads what was written before the kill.
   */
  start(): Promise<void>
}

export interface RedisServerOptions {
  /** How long a start may take. */
  ms?: number
  /**
   * Append-only file with an fsync per write (appendfsync always), in a temporary directory kept
   * across kill/start: what a production Redis needs so that jobs survive a crash (see README).
   */
  aof?: boolean
}

/** The kernel's range for the local ports of outgoing connections (Linux; the usual default elsewhere). */
export function ephemeralPorts(): { low: number; high: number } {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low && high) return { low, high }
  } catch {
    // not Linux
  }
  return { low: 32768, high: 60999 }
}

/**
 * A port nobody listens on right now, outside the ephemeral range. Port 0's answer comes from that
 * range, from which the kernel also takes the local port of every outgoing connection: with a
 * suite's worth of Postgres and Redis connections opening, one could take the port between this
 * answer and the server's bind, or while a test has the server down for a restart. Outside the
 * range only another test's pick can, one chance in thousands.
 */
export async function freePort(): Promise<number> {
  const eph = ephemeralPorts()
  // Below the range where there is room for it, else above it (a range from 1024 up leaves none
  // below); a range that fills everything leaves the kernel's choice.
  const [low, high] = eph.low - 1 - 10_000 >= 1000 ? [10_000, eph.low - 1] : 65_535 - eph.high >= 1000 ? [eph.high + 1, 65_535] : [0, 0]
  for (;;) {
    const port = low + Math.floor(Math.random() * (high - low + 1))
    const srv = net.createServer()
    const bound = await new Promise<boolean>((resolve) => {
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (!bound) continue
    const { port: taken } = srv.address() as net.AddressInfo
    await new Promise<void>((resolve) => srv.close(() => resolve()))
    return taken
  }
}

async function answersPing(url: string): Promise<boolean> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 500 })
  r.on('error', () => {})
  try {
    await r.connect()
    return (await r.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

/**
 * A redis-server of the test's own, on a free loopback port, that the test may kill and start
 * again. It is killed at teardown (and when the process exits), whatever happened in the test.
 * Register it before createWorld so that its teardown runs last (tap runs teardowns last-in first-out).
 */
export async function startRedisServer(t: Tap, opts: RedisServerOptions = {}): Promise<ThrowawayRedis> {
  const ms = opts.ms ?? 10_000
  const port = await freePort()
  const dir = opts.aof ? mkdtempSync(join(tmpdir(), 'cadr-redis-')) : undefined
  const persistence = dir ? ['--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']
  const url = `redis://127.0.0.1:${port}`
  let child: ChildProcess | undefined
  let exited: Promise<unknown> = Promise.resolve()

  const killNow = () => {
    // (A stopped process dies of SIGKILL too.)
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  const signal = (sig: NodeJS.Signals) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) throw new Error('redis-server is not running')
    child.kill(sig)
  }
  process.once('exit', killNow)
  // tap signals a test file that ran out of time with SIGALRM and may kill it before teardown runs.
  process.once('SIGALRM', killNow)

  async function start(): Promise<void> {
    if (child && child.exitCode === null && child.signalCode === null) throw new Error('redis-server is already running')
    const c = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, '--loglevel', 'warning'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    c.stderr?.on('data', (d) => (stderr += String(d)))
    child = c
    exited = once(c, 'exit')
    const spawnFailed = once(c, 'error').then(([err]) => {
      throw err as Error
    })
    spawnFailed.catch(() => {})
    const deadline = performance.now() + ms
    for (;;) {
      if (c.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${c.exitCode}: ${stderr.trim()}`)
      if (await Promise.race([answersPing(url), spawnFailed])) return
      if (performance.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${ms} ms`)
      await new Promise((r) => setTimeout(r, 25))
    }
  }

  async function kill(): Promise<void> {
    killNow()
    await exited
  }

  t.teardown(async () => {
    // Never throws: a failing teardown would skip the ones after it.
    await kill().catch(() => {})
    process.removeListener('exit', killNow)
    process.removeListener('SIGALRM', killNow)
    if (dir) rmSync(dir, { recursive: true, force: true })
  })
  await start()
  return { port, url, kill, start, pause: () => signal('SIGSTOP'), resume: () => signal('SIGCONT') }
}
