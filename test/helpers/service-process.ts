import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { freePort } from './redis-server.js'

interface Tap {
  teardown(fn: () => unknown): void
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface ServiceOptions {
  /** A label for messages. */
  name: string
  /** ROLE, e.g. 'api' or 'relay,worker'. */
  roles: string
  /** DATABASE_URL, REDIS_URL, BULLMQ_PREFIX, ADMIN_API_KEY… (everything the service reads). */
  env: Record<string, string>
  /** The API port; a free one when not given. Reuse one to restart an API "in place". */
  port?: number
  /** How long start() waits for the process to be ready. */
  readyMs?: number
  /** Ready once the process has logged a message containing this (instead of the roles' own signs). */
  readyOn?: string
}

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface ServiceProcess {
  name: string
  port: number
  /** http://127.0.0.1:port (meaningful when the process runs the api role). */
  url: string
  pid: number
  /** Resolves when the process is gone. */
  exited: Promise<Exit>
  alive(): boolean
  /** The last lines the process wrote (stdout and stderr), for failure messages. */
  output(): string
  /** Whether the process has logged a message containing `text`, however long ago (output() keeps only the last lines). */
  said(text: string): boolean
  /** Sends a signal and resolves when the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<Exit>
}

function newestMtime(dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return newest
}

let fresh: boolean | undefined
/** Whether dist/ was built after the last change to any source file (a clean clone: `npm ci` builds). */
function buildIsFresh(): boolean {
  if (fresh !== undefined) return fresh
  try {
    const sources = Math.max(...['src', 'migrations', 'rules'].map((d) => newestMtime(join(ROOT, d))))
    fresh = statSync(join(ROOT, 'dist/src/main.js')).mtimeMs >= sources
  } catch {
    fresh = false
  }
  return fresh
}

/**
 * The node arguments that run a program of src/ (`src/auth/keys-cli.ts`): its build, as in
 * production, when the build is newer than every source file; otherwise the source through tsx, so
 * that a test never runs stale code. The build starts in about half the CPU time, which matters
 * on a busy machine.
 */
export function programEntry(source: string): string[] {
  return buildIsFresh() ? [join(ROOT, 'dist', source.replace(/\.ts$/, '.js'))] : ['--import', 'tsx', join(ROOT, source)]
}

/** `src/main.ts`, the service (see programEntry). */
export function serviceEntry(): string[] {
  return programEntry('src/main.ts')
}

/**
 * This process's environment for a child program, without the NODE_OPTIONS tap sets for its own
 * children (a module loader hook that tracks processes for coverage, which is off): with it each
 * child of a test would pay that hook's cost, about a second of CPU.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _tapHooks, ...env } = process.env
  return { ...env, ...extra }
}

const running = new Set<ChildProcess>()
const killAll = () => {
  for (const c of running) c.kill('SIGKILL')
}
process.once('exit', killAll)
// tap signals a test file that ran out of time with SIGALRM, and may kill it before teardown runs:
// the service processes must not outlive it.
process.once('SIGALRM', killAll)

/**
 * Runs the service as a child process (see serviceEntry: the build, or the sources when they are
 * newer than the build) with the given roles and environment. Resolves once the
 * process is ready: the API answers /readyz (api role), or the process logged that its roles
 * started (relay and worker only). The process is SIGKILLed at teardown if it still runs.
 */
export async function startService(t: Tap, opts: ServiceOptions): Promise<ServiceProcess> {
  const port = opts.port ?? (await freePort())
  const hasApi = opts.roles.split(',').includes('api')
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    ROLE: opts.roles,
    // An API logs every request at info; a relay or worker says little, and says when it has started.
    LOG_LEVEL: hasApi ? 'warn' : 'info',
    RATE_LIMIT_PER_MINUTE: '1000000',
    ...opts.env,
  }
  const child = spawn(process.execPath, serviceEntry(), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  const exited: Promise<Exit> = once(child, 'exit').then(([code, signal]) => {
    running.delete(child)
    return { code: code as number | null, signal: signal as NodeJS.Signals | null }
  })
  let tail: string[] = []
  const started = new Set<string>()
  const keep = (chunk: Buffer) => {
    for (const line of String(chunk).split('\n')) {
      if (!line) continue
      tail.push(line)
      const msg = /"msg":"([^"]*)"/.exec(line)?.[1]
      if (msg) started.add(msg)
    }
    if (tail.length > 200) tail = tail.slice(-100)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const alive = () => child.exitCode === null && child.signalCode === null
  const proc: ServiceProcess = {
    name: opts.name,
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    exited,
    alive,
    output: () => tail.slice(-30).join('\n'),
    said: (text) => [...started].some((m) => m.includes(text)),
    async kill(signal = 'SIGKILL') {
      if (alive()) child.kill(signal)
      return exited
    },
  }
  t.teardown(async () => {
    if (alive()) child.kill('SIGKILL')
    await exited
  })

  const wanted = opts.readyOn
    ? [opts.readyOn]
    : [...(opts.roles.includes('worker') && !hasApi ? ['workers started'] : []), ...(opts.roles.includes('relay') && !hasApi ? ['outbox relay started'] : [])]
  const deadline = performance.now() + (opts.readyMs ?? 60_000)
  for (;;) {
    if (!alive()) throw new Error(`${opts.name} exited before it was ready:\n${proc.output()}`)
    if (hasApi && !opts.readyOn ? await answersReady(proc.url) : wanted.every((w) => [...started].some((m) => m.includes(w)))) return proc
    if (performance.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`${opts.name} not ready within ${opts.readyMs ?? 60_000} ms:\n${proc.output()}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function answersReady(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) })
    await res.arrayBuffer()
    return res.status === 200
  } catch {
    return false
  }
}
