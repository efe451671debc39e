import t from 'tap'
import { ensureBootstrapKey, generateKey } from '../../src/auth/keys.js'
import { createWorld } from '../helpers/world.js'

const world = await createWorld(t)
const { db } = world

t.test('the admin key ADMIN_API_KEY stores at start is in the audit log, once', async (t) => {
  const key = generateKey()
  t.equal(await ensureBootstrapKey(db, key), true, 'stored')
  const stored = await db.selectFrom('api_keys').select(['id', 'role']).where('name', '=', 'bootstrap-admin').executeTakeFirstOrThrow()
  t.equal(stored.role, 'admin')
  const records = await db.selectFrom('audit_log').select(['actor', 'action', 'target_type', 'target_id', 'details']).where('target_id', '=', stored.id).execute()
  t.match(records, [{ actor: 'ADMIN_API_KEY', action: 'key.create', target_type: 'api_key', details: { name: 'bootstrap-admin', role: 'admin', agencies: null } }], 'a key.create record, as the API and the CLI write')
  // Every later start presents the same key: nothing is created, nothing recorded.
  t.equal(await ensureBootstrapKey(db, key), false)
  t.equal((await db.selectFrom('audit_log').select('id').where('target_id', '=', stored.id).execute()).length, 1)
})
