import { spawn } from 'node:child_process'
import t from 'tap'
import { freePort } from '../helpers/redis-server.js'
import { childEnv, programEntry } from '../helpers/service-process.js'
import { createWorld } from '../helpers/world.js'

// About twenty runs of the CLI, each a node start (through tsx when the build is stale): 75 s with
// the machine loaded, too close to the suite's 120 s per file.
t.setTimeout(240_000)
const world = await createWorld(t)

/** `npm run keys -- …` (see programEntry), against this test's database. */
function keys(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return keysAgainst(world.databaseUrl, ...args)
}

function keysAgainst(databaseUrl: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [...programEntry('src/auth/keys-cli.ts'), ...args], {
    env: childEnv({ DATABASE_URL: databaseUrl, LOG_LEVEL: 'silent' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()))
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })))
}

t.test('a key for an agency no call can carry is refused, with the rule', async (t) => {
  const r = await keys('create', '--role', 'console', '--agency', 'Hastings PD', '--name', 'desk')
  t.equal(r.code, 2)
  t.match(r.stderr, /--agency Hastings PD: an agency id as calls carry it/)
  t.equal((await world.db.selectFrom('api_keys').select('id').where('name', '=', 'desk').execute()).length, 0, 'no key stored')
})

t.test('revoking something that is no key id answers plainly, without a stack trace', async (t) => {
  const r = await keys('revoke', 'abc')
  t.equal(r.code, 2)
  t.match(r.stderr, /^no key abc/)
  t.notMatch(r.stderr, /at .*\.(js|ts):\d+/, 'no stack')
})

t.test('a well-formed key is created and revoked', async (t) => {
  const made = await keys('create', '--role', 'console', '--agency', 'hastings-pd', '--name', 'desk-ok')
  t.equal(made.code, 0, made.stderr)
  const id = /\(([0-9a-f-]{36})\)/.exec(made.stdout)?.[1]
  t.ok(id, 'the new key id is printed')
  const gone = await keys('revoke', id!)
  t.equal(gone.code, 0, gone.stderr)
  t.match(gone.stdout, `revoked ${id}`)
  const records = await world.db.selectFrom('audit_log').select(['action', 'actor']).where('target_id', '=', id!).orderBy('id').execute()
  t.same(records, [{ action: 'key.create', actor: 'cli' }, { action: 'key.revoke', actor: 'cli' }], 'each change with its audit record')
})

t.test('a cad or console key names its agencies, or says --all-agencies', async (t) => {
  const forgot = await keys('create', '--role', 'cad', '--name', 'cad-forgot')
  t.equal(forgot.code, 2)
  t.match(forgot.stderr, /a cad key needs --agency <id> \(or --all-agencies/)
  t.equal((await world.db.selectFrom('api_keys').select('id').where('name', '=', 'cad-forgot').execute()).length, 0, 'no key stored')

  const county = await keys('create', '--role', 'console', '--all-agencies', '--queue', 'cru', '--name', 'county-cru')
  t.equal(county.code, 0, county.stderr)
  t.match(county.stdout, /for every agency, queues cru/)
  const row = await world.db.selectFrom('api_keys').select(['agencies', 'queues']).where('name', '=', 'county-cru').executeTakeFirstOrThrow()
  t.same(row, { agencies: null, queues: ['cru'] })

  const both = await keys('create', '--role', 'cad', '--agency', 'hastings-pd', '--all-agencies', '--name', 'cad-both')
  t.equal(both.code, 2)
  t.match(both.stderr, /not both/)
  // An admin's or a supervisor's key is the county's by nature.
  const supervisor = await keys('create', '--role', 'supervisor', '--name', 'sup')
  t.equal(supervisor.code, 0, supervisor.stderr)
})

t.test('--queue is for console keys only', async (t) => {
  const r = await keys('create', '--role', 'cad', '--agency', 'hastings-pd', '--queue', 'cru', '--name', 'cad-queue')
  t.equal(r.code, 2)
  t.match(r.stderr, /--queue narrows a console key; a cad key has no queues/)
})

t.test('an auditor key names no agencies: the audit log is read county-wide only', async (t) => {
  const r = await keys('create', '--role', 'auditor', '--agency', 'hastings-pd', '--name', 'auditor-narrow')
  t.equal(r.code, 2)
  t.match(r.stderr, /an auditor key takes no --agency/)
})

t.test('--help prints the usage; an unknown option names itself, without a stack trace', async (t) => {
  const help = await keys('--help')
  t.equal(help.code, 0, help.stderr)
  t.match(help.stdout, /^usage:\n {2}npm run keys -- create --role/)
  const bad = await keys('create', '--agencies', 'hastings-pd')
  t.equal(bad.code, 2)
  t.match(bad.stderr, /Unknown option '--agencies'[\s\S]*usage:/)
  t.notMatch(bad.stderr, /at .*\.(js|ts):\d+/, 'no stack')
})

t.test('revoking a key twice says it was already revoked', async (t) => {
  const made = await keys('create', '--role', 'cad', '--agency', 'hastings-pd', '--name', 'twice')
  const id = /\(([0-9a-f-]{36})\)/.exec(made.stdout)![1]!
  t.match((await keys('revoke', id)).stdout, `revoked ${id}`)
  const again = await keys('revoke', id)
  t.equal(again.code, 0)
  t.match(again.stdout, new RegExp(`^${id} \\(twice\\) was already revoked at `))
  const audits = await world.db.selectFrom('audit_log').select('id').where('action', '=', 'key.revoke').where('target_id', '=', id).execute()
  t.equal(audits.length, 1, 'one revocation audited')
})

t.test('the arguments are checked before anything touches the database', async (t) => {
  // Nothing listens on this port: a check made after connecting would fail on the connection instead.
  const nowhere = `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`
  for (const [args, message] of [
    [['create', '--role', 'cad', '--name', 'x'], /a cad key needs --agency/],
    [['create', '--role', 'cad', '--agency', 'hastings-pd', '--queue', 'cru', '--name', 'x'], /--queue narrows a console key/],
    [['revoke', 'abc'], /^no key abc/],
    [['rotate'], /^usage:/],
    // Infinity, or more days than a date can hold, made an invalid date and a raw database error.
    [['create', '--role', 'admin', '--name', 'x', '--expires-days', 'Infinity'], /--expires-days takes a number of days from 1 to 36500/],
    [['create', '--role', 'admin', '--name', 'x', '--expires-days', '1e12'], /--expires-days takes a number of days from 1 to 36500/],
  ] as const) {
    const r = await keysAgainst(nowhere, ...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, message)
    t.notMatch(r.stderr, /ECONNREFUSED|connect/, 'not a connection error')
  }
})
