/**
 * npm run keys -- create --role <role> --agency <id> [--agency …] [--queue <q> …] --name <label> [--expires-days N]
 * npm run keys -- list
 * npm run keys -- revoke <key id>
 *
 * A command-line tool: it prints to stdout on purpose (the new key is shown once, here).
 */
import { parseArgs } from 'node:util'
import { loadConfig } from '../config.js'
import { createDb, createPool } from '../db/connect.js'
import { ensureDatabase, migrateToLatest } from '../db/migrate.js'
import { QUEUES, type QueueName } from '../routing/index.js'
import { audit } from './audit.js'
import { AGENCY_ID, createKey, KEY_ID, listKeys, revokeKey } from './keys.js'
import { API_ROLES, type ApiRole } from './principal.js'

const out = (line: string) => process.stdout.write(`${line}\n`)
const fail = (line: string): never => {
  process.stderr.write(`${line}\n`)
  process.exit(2)
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    role: { type: 'string' },
    agency: { type: 'string', multiple: true },
    queue: { type: 'string', multiple: true },
    name: { type: 'string' },
    'expires-days': { type: 'string' },
  },
})
const [command, arg] = positionals

const config = loadConfig()
await ensureDatabase(config.DATABASE_URL)
const db = createDb(createPool({ connectionString: config.DATABASE_URL, max: 2, statementTimeoutMs: 10_000, applicationName: 'cad-router-keys' }))
try {
  await migrateToLatest(db)
  if (command === 'create') {
    const role = values.role as ApiRole | undefined
    if (!role || !API_ROLES.includes(role)) fail(`--role is one of ${API_ROLES.join(', ')}`)
    if (!values.name) fail('--name <label> is required')
    const queues = values.queue ?? null
    for (const q of queues ?? []) if (!(QUEUES as readonly string[]).includes(q)) fail(`unknown queue ${q}`)
    for (const a of values.agency ?? []) if (a.length > 64 || !AGENCY_ID.test(a)) fail(`--agency ${a}: an agency id as calls carry it, e.g. hastings-pd (lower-case letters, digits, . _ -)`)
    const days = values['expires-days'] ? Number(values['expires-days']) : null
    if (days !== null && !(days > 0)) fail('--expires-days takes a positive number')
    const { key, view } = await createKey(db, {
      name: values.name!,
      role: role!,
      agencies: values.agency ?? null,
      queues: queues as QueueName[] | null,
      expiresAt: days ? new Date(Date.now() + days * 86_400_000) : null,
      createdBy: 'cli',
    })
    await audit(db, null, { action: 'key.create', targetType: 'api_key', targetId: view.id, details: { name: view.name, role: view.role, agencies: view.agencies, queues: view.queues } }, 'cli')
    out(`created ${view.role} key "${view.name}" (${view.id}) for ${view.agencies?.join(', ') ?? 'every agency'}${view.expiresAt ? `, expires ${view.expiresAt}` : ''}`)
    out('the key (shown once, store it now):')
    out(key)
  } else if (command === 'list') {
    for (const k of await listKeys(db)) {
      const state = k.revokedAt ? `revoked ${k.revokedAt}` : k.expiresAt && new Date(k.expiresAt) <= new Date() ? `expired ${k.expiresAt}` : 'active'
      out(`${k.id}  ${k.keyPrefix}…  ${k.role.padEnd(10)} ${k.name}  agencies=${k.agencies?.join(',') ?? '*'}  queues=${k.queues?.join(',') ?? '*'}  ${state}`)
    }
  } else if (command === 'revoke') {
    if (!arg) fail('usage: npm run keys -- revoke <key id>')
    if (!KEY_ID.test(arg!)) fail(`no key ${arg} (a key id looks like the first column of \`npm run keys -- list\`)`)
    const v = await revokeKey(db, arg!)
    if (!v) fail(`no key ${arg}`)
    await audit(db, null, { action: 'key.revoke', targetType: 'api_key', targetId: v!.id, details: { name: v!.name } }, 'cli')
    out(`revoked ${v!.id} (${v!.name})`)
  } else {
    fail('usage: npm run keys -- create --role <role> --agency <id> --name <label> | list | revoke <id>')
  }
} finally {
  await db.destroy()
}
