/**
 * npm run keys -- create --role <role> (--agency <id> [--agency …] | --all-agencies) [--queue <q> …] --name <label> [--expires-days N]
 * npm run keys -- list
 * npm run keys -- revoke <key id>
 *
 * A command-line tool: it prints to stdout on purpose (the new key is shown once, here).
 */
import { parseArgs } from 'node:util'
import { loadConfigOrExit } from '../config.js'
import { createDb, createPool } from '../db/connect.js'
import { createMigrationDb, ensureDatabase, migrateToLatest } from '../db/migrate.js'
import { QUEUES, isAgencyId, type QueueName } from '../routing/index.js'
import { audit } from './audit.js'
import { createKey, KEY_ID, listKeys, mustNameAgencies, revokeKey, takesAgencies, takesQueues } from './keys.js'
import { API_ROLES, type ApiRole } from './principal.js'

const out = (line: string) => process.stdout.write(`${line}\n`)
const fail = (line: string): never => {
  process.stderr.write(`${line}\n`)
  process.exit(2)
}

const USAGE = `usage:
  npm run keys -- create --role <${API_ROLES.join('|')}> (--agency <id> [--agency <id> …] | --all-agencies)
                         [--queue <${QUEUES.join('|')}> …] --name <label> [--expires-days <n>]
  npm run keys -- list
  npm run keys -- revoke <key id>
A cad or console key names its agencies, or says --all-agencies: leaving them out is not a way to
grant every agency. --queue narrows a console key to those queues (default: every queue).`

const parsed = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        role: { type: 'string' },
        agency: { type: 'string', multiple: true },
        'all-agencies': { type: 'boolean', default: false },
        queue: { type: 'string', multiple: true },
        name: { type: 'string' },
        'expires-days': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (err) {
    // An unknown or malformed option: say which, and how it is used, without a stack trace.
    return fail(`${(err as Error).message}\n${USAGE}`)
  }
})()
const { positionals, values } = parsed
if (values.help) {
  out(USAGE)
  process.exit(0)
}
const [command, arg] = positionals

/** What `create` will store: every argument checked before anything touches the database. */
function createInput() {
  const role = values.role as ApiRole | undefined
  if (!role || !API_ROLES.includes(role)) return fail(`--role is one of ${API_ROLES.join(', ')}`)
  if (!values.name) return fail('--name <label> is required')
  const queues = values.queue ?? null
  for (const q of queues ?? []) if (!(QUEUES as readonly string[]).includes(q)) fail(`unknown queue ${q}`)
  if (queues && !takesQueues(role)) fail(`--queue narrows a console key; a ${role} key has no queues`)
  if (values.agency && !takesAgencies(role)) fail('the audit log is read county-wide only: an auditor key takes no --agency')
  for (const a of values.agency ?? []) if (!isAgencyId(a)) fail(`--agency ${a}: an agency id as calls carry it, e.g. hastings-pd (lower-case letters, digits, . _ -)`)
  if (values.agency && values['all-agencies']) fail('--agency or --all-agencies, not both')
  if (mustNameAgencies(role) && !values.agency && !values['all-agencies']) fail(`a ${role} key needs --agency <id> (or --all-agencies, to allow every agency)\n${USAGE}`)
  const days = values['expires-days'] ? Number(values['expires-days']) : null
  // (Infinity, or more days than a date holds, would make an invalid date: a raw database error.)
  if (days !== null && !(days >= 1 && days <= 36_500)) fail('--expires-days takes a number of days from 1 to 36500')
  return {
    name: values.name,
    role,
    agencies: values.agency ?? null,
    queues: queues as QueueName[] | null,
    expiresAt: days ? new Date(Date.now() + days * 86_400_000) : null,
  }
}

const create = command === 'create' ? createInput() : undefined
if (command === 'revoke') {
  if (!arg) fail('usage: npm run keys -- revoke <key id>')
  if (!KEY_ID.test(arg!)) fail(`no key ${arg} (a key id looks like the first column of \`npm run keys -- list\`)`)
} else if (command !== 'create' && command !== 'list') {
  fail(USAGE)
}

const config = loadConfigOrExit()
await ensureDatabase(config.DATABASE_URL)
// Migrated as `npm run migrate` does, under its statement time-out: a release's first command may
// be this one, and a migration that reads a big table outlasts the key statements' 10 s.
const migrationDb = createMigrationDb(config.DATABASE_URL, config.MIGRATE_STATEMENT_TIMEOUT_MS)
await migrateToLatest(migrationDb).finally(() => migrationDb.destroy())
const db = createDb(createPool({ connectionString: config.DATABASE_URL, max: 2, statementTimeoutMs: 10_000, applicationName: 'cad-router-keys' }))
try {
  if (create) {
    // The key and its audit record in one transaction, as the API makes them: no key without its record.
    const { key, view } = await db.transaction().execute(async (trx) => {
      const made = await createKey(trx, { ...create, createdBy: 'cli' })
      const { view } = made
      await audit(trx, null, { action: 'key.create', targetType: 'api_key', targetId: view.id, details: { name: view.name, role: view.role, agencies: view.agencies, queues: view.queues } }, 'cli')
      return made
    })
    const scope = `${view.agencies?.join(', ') ?? 'every agency'}${takesQueues(view.role) ? `, ${view.queues ? `queues ${view.queues.join(', ')}` : 'every queue'}` : ''}`
    out(`created ${view.role} key "${view.name}" (${view.id}) for ${scope}${view.expiresAt ? `, expires ${view.expiresAt}` : ''}`)
    out('the key (shown once, store it now):')
    out(key)
  } else if (command === 'list') {
    for (const k of await listKeys(db)) {
      const state = k.revokedAt ? `revoked ${k.revokedAt}` : k.expiresAt && new Date(k.expiresAt) <= new Date() ? `expired ${k.expiresAt}` : 'active'
      out(`${k.id}  ${k.keyPrefix}…  ${k.role.padEnd(10)} ${k.name}  agencies=${k.agencies?.join(',') ?? '*'}  queues=${k.queues?.join(',') ?? '*'}  ${state}`)
    }
  } else if (command === 'revoke') {
    const { before, v } = await db.transaction().execute(async (trx) => {
      const before = await trx.selectFrom('api_keys').select('revoked_at').where('id', '=', arg!).forUpdate().executeTakeFirst()
      const v = await revokeKey(trx, arg!)
      if (v && !before?.revoked_at) await audit(trx, null, { action: 'key.revoke', targetType: 'api_key', targetId: v.id, details: { name: v.name } }, 'cli')
      return { before, v }
    })
    if (!v) fail(`no key ${arg}`)
    if (before?.revoked_at) out(`${v!.id} (${v!.name}) was already revoked at ${v!.revokedAt}`)
    else out(`revoked ${v!.id} (${v!.name})`)
  }
} finally {
  await db.destroy()
}
