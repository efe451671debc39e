import { spawn } from 'node:child_process'
import t from 'tap'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)

/** `npm run keys -- …` from the sources, against this test's database. */
function keys(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/auth/keys-cli.ts', ...args], {
    env: { ...process.env, DATABASE_URL: world.databaseUrl, LOG_LEVEL: 'silent' },
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
})
