import t from 'tap'
import { readFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { HISTORY_WINDOW_MS } from '../src/calls/history.js'
import { ConfigError, loadConfig, MIN_RETENTION_DAYS, SETTING_NAMES } from '../src/config.js'
import { childEnv, serviceEntry } from './helpers/service-process.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'

t.test('a blank value is unset: the default applies', async (t) => {
  const defaults = loadConfig({})
  // Settings where 0 means "off": a blank read as a number would have silently turned them off.
  for (const name of ['INGEST_BATCH_HOLD_MS', 'AUTH_CACHE_MS', 'FEED_READ_GAP_MS', 'DATABASE_LOCK_TIMEOUT_MS'] as const) {
    t.not(defaults[name], 0, `${name} has a default other than 0`)
    t.equal(loadConfig({ [name]: '' })[name], defaults[name], `${name}= is the default`)
    t.equal(loadConfig({ [name]: '  ' })[name], defaults[name], `${name} of spaces is the default`)
    t.equal(loadConfig({ [name]: '0' })[name], 0, `${name}=0 is still 0`)
  }
  // Blank strings a compose file's `${FOO:-}` passes: read as values, they stopped the process or
  // emptied a list.
  const blank = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: '', ADMIN_API_KEY: '', DATABASE_URL: '', ROLE: '', ACK_DEADLINES: ' ', PORT: '' })
  t.equal(blank.OTEL_EXPORTER_OTLP_ENDPOINT, undefined, 'no trace export')
  t.equal(blank.ADMIN_API_KEY, undefined, 'no bootstrap key')
  t.equal(blank.DATABASE_URL, defaults.DATABASE_URL)
  t.same(blank.ROLE, ['api', 'relay', 'worker'])
  t.same(blank.ACK_DEADLINES, defaults.ACK_DEADLINES, 'deadlines kept, not all removed')
  t.ok(Object.keys(blank.ACK_DEADLINES).length > 0)
  t.equal(blank.PORT, 3000)
})

t.test('ACK_DEADLINES=none: no queue escalates', async (t) => {
  t.same(loadConfig({ ACK_DEADLINES: 'none' }).ACK_DEADLINES, {})
  t.same(loadConfig({ ACK_DEADLINES: 'police=45' }).ACK_DEADLINES, { police: 45 })
  t.throws(() => loadConfig({ ACK_DEADLINES: 'none,police=30' }), ConfigError, '"none" is the whole value or nothing')
})

t.test('WORKER_CONCURRENCY_PER_QUEUE counts jobs: whole numbers only (ACK_DEADLINES may be fractional seconds)', async (t) => {
  t.same(loadConfig({ WORKER_CONCURRENCY_PER_QUEUE: 'police=2,cru=1' }).WORKER_CONCURRENCY_PER_QUEUE, { police: 2, cru: 1 })
  t.throws(() => loadConfig({ WORKER_CONCURRENCY_PER_QUEUE: 'police=1.5' }), /WORKER_CONCURRENCY_PER_QUEUE.*police=1\.5.*whole/)
  t.same(loadConfig({ ACK_DEADLINES: 'police=1.5' }).ACK_DEADLINES, { police: 1.5 })
})

t.test('a bad value still stops the process, naming the setting', async (t) => {
  t.throws(() => loadConfig({ AUTH_CACHE_MS: 'soon' }), /AUTH_CACHE_MS/)
  t.throws(() => loadConfig({ PORT: '-1' }), /PORT/)
  t.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' }), /OTEL_EXPORTER_OTLP_ENDPOINT/)
  // More days than a date holds made every scrub's cut-off an invalid date: the process ran, and
  // never scrubbed. Refused at start instead.
  t.throws(() => loadConfig({ RETENTION_DAYS: '1e9' }), /RETENTION_DAYS/)
  t.equal(loadConfig({ RETENTION_DAYS: '3650' }).RETENTION_DAYS, 3650, 'ten years is fine')
  // Below the history window the service warns at start (the scrub clears the keys prior calls are counted by).
  t.equal(MIN_RETENTION_DAYS * 24 * 3600_000, HISTORY_WINDOW_MS, 'the warning\'s floor is the history window')
  // An empty role list started nothing and exited 0.
  t.throws(() => loadConfig({ ROLE: ' , ' }), /ROLE: names no role/)
  // Past what a timer can wait (about 24.8 days), Node waits 1 ms: a monthly check would run every ms.
  t.throws(() => loadConfig({ RETENTION_EVERY_MS: String(30 * 24 * 3600_000) }), /RETENTION_EVERY_MS/)
  t.throws(() => loadConfig({ RULE_SET_CHECK_MS: '3000000000' }), /RULE_SET_CHECK_MS/)
  t.equal(loadConfig({ RETENTION_EVERY_MS: String(7 * 24 * 3600_000) }).RETENTION_EVERY_MS, 7 * 24 * 3600_000, 'a week is fine')
})

t.test('TRUST_PROXY: addresses and ranges of proxies, never a number of hops', async (t) => {
  t.equal(loadConfig({}).TRUST_PROXY, false, 'unset: nobody’s X-Forwarded-For is believed')
  t.same(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1,fd00::/8,loopback' }).TRUST_PROXY, ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', 'loopback'])
  t.throws(() => loadConfig({ TRUST_PROXY: '2' }), /TRUST_PROXY.*"2"/, 'a hop count cannot tell a proxy from a client')
  t.throws(() => loadConfig({ TRUST_PROXY: '10.0.0.0/33' }), /TRUST_PROXY/)
  t.throws(() => loadConfig({ TRUST_PROXY: 'lb.example' }), /TRUST_PROXY/)
})

t.test('WORKER_DRAIN_MS: below SHUTDOWN_GRACE_MS; unset, it follows a short grace period', async (t) => {
  t.equal(loadConfig({}).WORKER_DRAIN_MS, 5000)
  t.equal(loadConfig({ SHUTDOWN_GRACE_MS: '4000' }).WORKER_DRAIN_MS, 2000, 'half a grace period under 10 s')
  t.equal(loadConfig({ SHUTDOWN_GRACE_MS: '4000', WORKER_DRAIN_MS: '3000' }).WORKER_DRAIN_MS, 3000)
  t.throws(() => loadConfig({ SHUTDOWN_GRACE_MS: '4000', WORKER_DRAIN_MS: '4000' }), /WORKER_DRAIN_MS: must be below SHUTDOWN_GRACE_MS \(4000\)/)
  t.throws(() => loadConfig({ WORKER_DRAIN_MS: '12000' }), /WORKER_DRAIN_MS: must be below SHUTDOWN_GRACE_MS \(10000\)/)
})

t.test("every setting is in the README's Configuration table", async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  t.ok(SETTING_NAMES.includes('ADMIN_API_KEY') && SETTING_NAMES.length > 40, `${SETTING_NAMES.length} settings, the optional ones included`)
  t.same(
    SETTING_NAMES.filter((n) => !readme.includes(`| \`${n}\` |`)),
    [],
    'each has its row',
  )
  // And the other way: no row for a setting that no longer exists.
  const table = readme.slice(readme.indexOf('\n## Configuration\n'), readme.indexOf('\n## ', readme.indexOf('\n## Configuration\n') + 1))
  const rows = [...table.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1])
  t.ok(rows.length >= SETTING_NAMES.length, `${rows.length} rows`)
  t.same(
    rows.filter((n) => !(SETTING_NAMES as readonly string[]).includes(n!)),
    [],
    'each row is a setting',
  )
})

/** The service (see serviceEntry), run to its exit with these settings over the environment's. */
const runService = async (env: Record<string, string>) => {
  const { spawnSync } = await import('node:child_process')
  return spawnSync(process.execPath, serviceEntry(), {
    cwd: new URL('..', import.meta.url).pathname,
    env: childEnv(env),
    encoding: 'utf8',
    timeout: 30_000,
  })
}

t.test('the service started with a bad setting names it and exits with 2, without a stack trace', async (t) => {
  const r = await runService({ PORT: 'abc', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never-reached' })
  t.equal(r.status, 2, r.stderr)
  t.match(r.stderr, /^invalid configuration:\n {2}PORT: /)
  t.notMatch(r.stderr, /at .*\.(js|ts):\d+/, 'no stack')
})

t.test('the service that cannot reach Postgres at start names the setting and the address, never the password, and exits with 1', async (t) => {
  // Port 1: nothing listens there, so the connection is refused at once.
  const r = await runService({ PORT: '0', LOG_LEVEL: 'info', RETENTION_DAYS: '2', DATABASE_URL: 'postgres://postgres:hunter2-secret@127.0.0.1:1/never-reached' })
  t.equal(r.status, 1, r.stderr)
  // Before anything else: a RETENTION_DAYS under the history window is allowed, and said.
  t.match(r.stdout, /"level":40,[^\n]*"RETENTION_DAYS":2,[^\n]*below the 30-day history window/, 'a retention shorter than the history window is warned of')
  t.match(r.stdout, /"level":40,[^\n]*"RETENTION_DAYS":2,[^\n]*below the follow-up deadline \(72 h\)/, 'and one shorter than the follow-up deadline')
  const failed = r.stdout.split('\n').find((l) => l.includes('"msg":"start failed"'))
  t.ok(failed, `a 'start failed' line (${r.stdout.slice(-500)})`)
  t.match(failed, /DATABASE_URL/, 'it names the setting')
  t.match(failed, /127\.0\.0\.1:1\b/, 'and where it tried')
  t.match(failed, /ECONNREFUSED/, 'and why, in its cause')
  t.notMatch(r.stdout + r.stderr, /hunter2/, 'no password')
})

t.test('the service started against a Postgres gone silent fails within DATABASE_QUERY_TIMEOUT_MS and says why, rather than hang', async (t) => {
  // A proxy frozen before the start: connections are accepted and never answered (a frozen host).
  const proxy = await startTcpProxy(t, { host: '127.0.0.1', port: 5432 })
  proxy.freeze()
  const { execFile } = await import('node:child_process')
  const started = performance.now()
  // Not spawnSync: the proxy runs in this process. The build when it is fresh (as the fault tests'
  // processes), which starts in a fraction of tsx's CPU: through tsx the process took 5-10 s to reach
  // 'starting' on a busy machine, half of the kill limit. The limit only tells an exit from a hang
  // (which never ends); the bound itself is read from the log's own times below.
  const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      serviceEntry(),
      {
        cwd: new URL('..', import.meta.url).pathname,
        env: childEnv({ PORT: '0', LOG_LEVEL: 'info', DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/never-answered`, DATABASE_STATEMENT_TIMEOUT_MS: '500', DATABASE_QUERY_TIMEOUT_MS: '1000' }),
        encoding: 'utf8',
        timeout: 45_000,
      },
      (_err, stdout, stderr) => resolve({ status: child.exitCode, stdout, stderr }),
    )
  })
  t.equal(r.status, 1, `exit 1 after ${Math.round(performance.now() - started)} ms (${r.stderr.slice(-300)})`)
  const line = (msg: string) => r.stdout.split('\n').find((l) => l.includes(`"msg":"${msg}"`))
  const failed = line('start failed')
  t.ok(failed, `a 'start failed' line (${r.stdout.slice(-500)})`)
  // From the log's own times: the process's start (tsx compiling the sources) is not the bound's.
  const at = (l: string | undefined) => (JSON.parse(l ?? '{}') as { time?: number }).time ?? NaN
  const took = at(failed) - at(line('starting'))
  t.ok(took >= 1000 && took < 3000, `failed ${took} ms after 'starting'`)
  t.match(failed, /DATABASE_URL/, 'it names the setting')
  t.match(failed, /no answer from Postgres within 1000 ms/, 'and why, in its cause')
})

t.test('DATABASE_QUERY_TIMEOUT_MS: above the statement time-out; unset, twice it', async (t) => {
  t.equal(loadConfig({}).DATABASE_QUERY_TIMEOUT_MS, 10_000)
  t.equal(loadConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '30000' }).DATABASE_QUERY_TIMEOUT_MS, 60_000, 'it follows a longer statement time-out')
  t.equal(loadConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '1000', DATABASE_QUERY_TIMEOUT_MS: '1500' }).DATABASE_QUERY_TIMEOUT_MS, 1500)
  // At or below it, the service would give up on statements Postgres still lets run.
  t.throws(() => loadConfig({ DATABASE_QUERY_TIMEOUT_MS: '5000' }), /DATABASE_QUERY_TIMEOUT_MS: must be above DATABASE_STATEMENT_TIMEOUT_MS \(5000\)/)
  t.throws(() => loadConfig({ DATABASE_QUERY_TIMEOUT_MS: '0' }), /DATABASE_QUERY_TIMEOUT_MS/)
  t.equal(loadConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '2000000000' }).DATABASE_QUERY_TIMEOUT_MS, 2_147_483_647, 'at most what a timer can wait')
})
