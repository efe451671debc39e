/**
 * The rule-set lifecycle over HTTP: the shipped default is version 1 on first start; drafts are
 * stored only when verified; activation and rollback are atomic, recorded, audited and used by the
 * next call; permissions keep everyone but county-wide supervisors (and admins) out of changes.
 */
import pg from 'pg'
import t from 'tap'
import { RULE_SET_LOCK } from '../../src/rule-sets/repository.js'
import { callEvent } from '../helpers/events.js'
import { createWorld, eventually } from '../helpers/world.js'
import { defaultDocument } from '../routing/fixtures/helpers.js'

// Documents built on purpose outside what any type allows.
type Loose = any // eslint-disable-line @typescript-eslint/no-explicit-any

const world = await createWorld(t)
const { app, db } = world

/** The default rule set as version `v`, its last rule renamed so decisions show which version ran. */
function version(v: number): Loose {
  const doc: Loose = defaultDocument()
  doc.version = v
  doc.name = `dakota-county-v${v}`
  doc.rules.at(-1).id = `default-police-v${v}`
  return doc
}

const post = (url: string, payload: unknown, authorization?: string) =>
  app.inject({ method: 'POST', url, payload: payload as object, ...(authorization ? { headers: { authorization: `Bearer ${authorization}` } } : {}) })
const get = (url: string, authorization?: string) => app.inject({ method: 'GET', url, ...(authorization ? { headers: { authorization: `Bearer ${authorization}` } } : {}) })
const routeNoise = async () => {
  const res = await post('/v1/call-events', callEvent({ natureCode: 'NOISE' }))
  return res.json().decision as { ruleSetVersion: number; ruleId: string }
}

t.test('first start: the shipped default rule set is version 1, active, with its activation recorded', async (t) => {
  const res = await get('/v1/rule-sets')
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.activeVersion, 1)
  t.match(body.ruleSets, [{ version: 1, name: 'dakota-county-default', status: 'active', createdBy: 'system' }])
  t.equal(body.ruleSets.length, 1, 'one rule set')
  t.match(body.activations, [{ kind: 'initial', fromVersion: null, toVersion: 1, actor: 'system' }])
  t.equal(body.activations.length, 1, 'one activation')
  const one = await get('/v1/rule-sets/1')
  t.equal(one.statusCode, 200)
  t.same(one.json().document, defaultDocument())
  t.equal((await routeNoise()).ruleSetVersion, 1)
})

t.test('a draft that fails verification is refused with a readable report (422)', async (t) => {
  const doc = version(2)
  doc.rules.unshift({ id: 'armed-crisis-cru', principle: 3, description: 'Armed person in crisis: CRU.', when: { all: [{ flag: 'weapons' }] }, action: { route: 'cru' } })
  doc.rules[5].id = doc.rules[4].id
  const res = await post('/v1/rule-sets', doc)
  t.equal(res.statusCode, 422)
  t.match(res.headers['content-type'], /application\/problem\+json/)
  const problem = res.json()
  t.equal(problem.code, 'verification-failed')
  t.match(problem.detail, /rule set 2 failed verification/)
  t.match(problem.detail, /\[duplicate-rule-id\] rules\[5\]\.id: rule id .* is used twice/)
  t.same(problem.findings.map((f: { kind: string }) => f.kind), ['duplicate-rule-id'], 'schema findings first: the invariants need a valid document')

  doc.rules[5].id = 'distinct-again'
  const again = await post('/v1/rule-sets', doc)
  t.equal(again.statusCode, 422)
  t.match(again.json().findings, [{ kind: 'police-invariant', ruleId: 'armed-crisis-cru', examples: [/flags weapons/] }])
  t.match(again.json().detail, /e\.g\. /)
  t.equal((await get('/v1/rule-sets')).json().ruleSets.length, 1, 'nothing stored')
})

t.test('store a verified draft; versions only go up', async (t) => {
  const res = await post('/v1/rule-sets', version(2))
  t.equal(res.statusCode, 201, res.body)
  t.match(res.json(), { version: 2, name: 'dakota-county-v2', status: 'draft', activatedAt: null, verification: { ok: true, findings: [] } })
  const again = await post('/v1/rule-sets', version(2))
  t.equal(again.statusCode, 409)
  t.match(again.json(), { code: 'rule-set-conflict', nextVersion: 3 })
  const older = await post('/v1/rule-sets', version(1))
  t.equal(older.statusCode, 409)
  // Drafts are never deleted: a typo far ahead would leave no version to publish under.
  const typo = await post('/v1/rule-sets', version(2_147_483_647))
  t.equal(typo.statusCode, 409, 'more than 1000 above the latest')
  t.match(typo.json(), { code: 'rule-set-conflict', nextVersion: 3, detail: /more than 1000 above the latest \(2\)/ })
  const report = await get('/v1/rule-sets/2/verification')
  t.equal(report.statusCode, 200)
  t.match(report.json(), { ok: true, version: 2, coverage: [{ route: 'police' }, { route: 'cru' }, { route: 'co_response' }, { route: 'ems' }, { route: 'case_manager' }] })
  const text = await app.inject({ method: 'GET', url: '/v1/rule-sets/2/verification', headers: { accept: 'text/plain' } })
  t.match(text.headers['content-type'], /^text\/plain/)
  t.match(text.body, /^rule set 2 passed verification/)
  t.match(text.body, /\ncru\n  ← mental-health-cru: CITASST, EDP, INTOX, SUICIDE, SUICTHRT, WELFARE; never weapons, violence, threatToOthers, crimeInProgress, medicalEmergency, injury, coResponseRequested\n/)
  t.match(text.body, /← mental-health-cru \(CRU fallback\)/)
  // axios's default Accept names text/plain after JSON: a client that parses JSON gets JSON.
  for (const accept of ['application/json, text/plain, */*', 'application/json;q=1, text/plain;q=0.1', '*/*']) {
    const res = await app.inject({ method: 'GET', url: '/v1/rule-sets/2/verification', headers: { accept } })
    t.match(res.headers['content-type'], /^application\/json/, `JSON for ${accept}`)
  }
  t.equal((await get('/v1/rule-sets/99')).statusCode, 404)
  t.equal((await get('/v1/rule-sets/99/verification')).statusCode, 404)
  t.equal((await routeNoise()).ruleSetVersion, 1, 'a draft routes nothing')
})

t.test('activate: atomic, recorded, audited, and the next call uses it', async (t) => {
  const res = await post('/v1/rule-sets/2/activate', { reason: 'rename the default rule' })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.json(), { fromVersion: 1, toVersion: 2, kind: 'activate' })
  t.equal(world.ruleSets.active().version, 2, 'this instance switched before answering')
  t.match(await routeNoise(), { ruleSetVersion: 2, ruleId: 'default-police-v2' })

  const list = (await get('/v1/rule-sets')).json()
  t.equal(list.activeVersion, 2)
  t.match(list.ruleSets, [{ version: 2, status: 'active' }, { version: 1, status: 'retired' }])
  t.match(list.activations[0], { kind: 'activate', fromVersion: 1, toVersion: 2, actor: 'test-admin', reason: 'rename the default rule' })
  const audit = await db.selectFrom('audit_log').selectAll().where('action', '=', 'rule-set.activate').execute()
  t.equal(audit.length, 1)
  t.match(audit[0], { target_type: 'rule_set', target_id: '2', actor: 'test-admin', details: { fromVersion: 1, toVersion: 2, reason: 'rename the default rule' } })

  const twice = await post('/v1/rule-sets/2/activate', { reason: 'again' })
  t.equal(twice.statusCode, 409)
  t.equal((await post('/v1/rule-sets/7/activate', { reason: 'nothing there' })).statusCode, 404)
  t.equal((await post('/v1/rule-sets/1/activate', {})).statusCode, 400, 'a reason is required')
})

t.test('rollback undoes the last activation; a second rollback undoes the first', async (t) => {
  const back = await post('/v1/rule-sets/rollback', { reason: 'v2 misbehaves' })
  t.equal(back.statusCode, 200, back.body)
  t.match(back.json(), { fromVersion: 2, toVersion: 1, kind: 'rollback' })
  t.equal((await routeNoise()).ruleSetVersion, 1)
  const forth = await post('/v1/rule-sets/rollback', { reason: 'it was fine after all' })
  t.match(forth.json(), { fromVersion: 1, toVersion: 2, kind: 'rollback' })
  t.equal((await routeNoise()).ruleSetVersion, 2)
  const explicit = await post('/v1/rule-sets/rollback', { reason: 'to the shipped rules', toVersion: 1 })
  t.match(explicit.json(), { fromVersion: 2, toVersion: 1, kind: 'rollback' })
  const history = (await get('/v1/rule-sets')).json().activations
  t.same(
    history.map((a: { kind: string; fromVersion: number | null; toVersion: number }) => `${a.kind} ${a.fromVersion}→${a.toVersion}`),
    ['rollback 2→1', 'rollback 1→2', 'rollback 2→1', 'activate 1→2', 'initial null→1'],
  )
  t.equal((await db.selectFrom('audit_log').select('id').where('action', '=', 'rule-set.rollback').execute()).length, 3)
})

t.test('activation re-verifies: a stored version that fails is refused with the report', async (t) => {
  // Stored behind the API's back (as by an older release whose checks were weaker).
  const doc = version(3)
  doc.rules.unshift({ id: 'overdose-police', principle: 9, description: 'Overdose: police.', when: { all: [{ natureCode: ['OD'] }] }, action: { route: 'police' } })
  await db.insertInto('rule_sets').values({ version: 3, name: doc.name, document: JSON.stringify(doc), status: 'draft' }).execute()
  const res = await post('/v1/rule-sets/3/activate', { reason: 'try it' })
  t.equal(res.statusCode, 422)
  t.match(res.json(), { code: 'verification-failed', findings: [{ kind: 'ems-invariant', ruleId: 'overdose-police' }] })
  t.equal(world.ruleSets.active().version, 1, 'still the old version')
  t.equal((await get('/v1/rule-sets')).json().activeVersion, 1)
  t.match((await get('/v1/rule-sets/3/verification')).json(), { ok: false, findings: [{ kind: 'ems-invariant' }] })
})

t.test('the rule-set schema is published as JSON Schema in the OpenAPI document', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/docs/json' })
  const doc = res.json()
  t.ok(doc.components.schemas.RuleSet, 'components.schemas.RuleSet')
  t.ok(doc.components.schemas.RuleSetCondition, 'components.schemas.RuleSetCondition (recursive)')
  t.match(doc.paths['/v1/rule-sets'].post.requestBody.content['application/json'].schema.$ref, /RuleSet/)
  t.ok(doc.paths['/v1/rule-sets/{version}/activate'].post.responses['422'])
})

t.test('permissions: supervisors (county-wide for changes) and admins only', async (t) => {
  const county = await world.key('supervisor')
  const cityOnly = await world.key('supervisor', { agencies: ['hastings-pd'] })
  const others = await Promise.all([world.key('cad'), world.key('console'), world.key('auditor')])
  for (const key of others) {
    t.equal((await get('/v1/rule-sets', key)).statusCode, 403)
    t.equal((await get('/v1/rule-sets/1', key)).statusCode, 403)
    t.equal((await get('/v1/rule-sets/1/verification', key)).statusCode, 403)
    t.equal((await post('/v1/rule-sets', version(9), key)).statusCode, 403)
    t.equal((await post('/v1/rule-sets/2/activate', { reason: 'nope' }, key)).statusCode, 403)
    t.equal((await post('/v1/rule-sets/rollback', { reason: 'nope' }, key)).statusCode, 403)
  }
  t.equal((await app.inject({ method: 'GET', url: '/v1/rule-sets', headers: { authorization: '' } })).statusCode, 401)

  // Rule sets route every agency's calls: a city supervisor may read them, not change them.
  t.equal((await get('/v1/rule-sets', cityOnly)).statusCode, 200)
  t.equal((await get('/v1/rule-sets/1/verification', cityOnly)).statusCode, 200)
  const cityPost = await post('/v1/rule-sets', version(4), cityOnly)
  t.equal(cityPost.statusCode, 403)
  t.match(cityPost.json().detail, /county-wide/)
  t.equal((await post('/v1/rule-sets/2/activate', { reason: 'city wants it' }, cityOnly)).statusCode, 403)
  t.equal((await post('/v1/rule-sets/rollback', { reason: 'city wants it' }, cityOnly)).statusCode, 403)
  t.equal(world.ruleSets.active().version, 1)

  const created = await post('/v1/rule-sets', version(4), county)
  t.equal(created.statusCode, 201, created.body)
  t.equal(created.json().createdBy, 'test-supervisor-1')
  const activated = await post('/v1/rule-sets/4/activate', { reason: 'county supervisor' }, county)
  t.equal(activated.statusCode, 200)
  t.equal(world.ruleSets.active().version, 4)
})

t.test('a version beyond what the store can hold is a verification finding, not an error', async (t) => {
  const res = await post('/v1/rule-sets', version(2 ** 31))
  t.equal(res.statusCode, 422)
  t.match(res.json().findings, [{ kind: 'schema', path: 'version' }])
})

t.test('a rollback that waited for another supervisor’s activation is refused, not made over it', async (t) => {
  t.equal((await post('/v1/rule-sets', version(5))).statusCode, 201)
  t.equal((await post('/v1/rule-sets/5/activate', { reason: 'version 5 for the pilot' })).statusCode, 200)
  t.equal((await post('/v1/rule-sets', version(6))).statusCode, 201)
  // Another instance's activation 5 → 6 holds the rule-set lock while this rollback (of 4 → 5)
  // reads its target and waits for the lock.
  const other = new pg.Client({ connectionString: world.databaseUrl })
  await other.connect()
  t.teardown(() => other.end().catch(() => {}))
  await other.query('begin')
  await other.query('select pg_advisory_xact_lock($1)', [RULE_SET_LOCK])
  const rollback = post('/v1/rule-sets/rollback', { reason: 'version 5 misbehaves' })
  await eventually(async () => {
    const { rows } = await other.query(`select 1 from pg_stat_activity where datname = current_database() and wait_event = 'advisory' and pid <> pg_backend_pid()`)
    return rows.length > 0
  })
  await other.query(`update rule_sets set status = 'retired' where status = 'active'`)
  await other.query(`update rule_sets set status = 'active', activated_at = now() where version = 6`)
  await other.query(`insert into rule_set_activations (kind, from_version, to_version, actor, reason) values ('activate', 5, 6, 'other-supervisor', 'version 6 for the pilot')`)
  await other.query('commit')
  const res = await rollback
  t.equal(res.statusCode, 409, res.body)
  t.match(res.json().detail, /version 6 was activated meanwhile/)
  t.equal((await get('/v1/rule-sets')).json().activeVersion, 6, 'version 6 stays active: the supervisor rolls back again, knowing')
})

t.test('a rollback to a version stored before a check it breaks was added goes through; activating it does not', async (t) => {
  // Version 7 as a release before the check stored it: a fallback for follow_up, which verification
  // now refuses (escalation ignores it). Rollback is the emergency path: it is not blocked by it.
  const doc = version(7)
  doc.escalation = { ...doc.escalation, follow_up: 'case_manager' }
  await db.insertInto('rule_sets').values({ version: 7, name: doc.name, document: JSON.stringify(doc), status: 'retired' }).execute()
  const active = (await get('/v1/rule-sets')).json().activeVersion as number
  const refused = await post('/v1/rule-sets/7/activate', { reason: 'the old rules again' })
  t.equal(refused.statusCode, 422, 'an activation verifies it as a new version')
  t.match(refused.json().findings, [{ path: 'escalation.follow_up' }])
  const back = await post('/v1/rule-sets/rollback', { reason: 'the new rules misbehave', toVersion: 7 })
  t.equal(back.statusCode, 200, back.body)
  t.match(back.json(), { fromVersion: active, toVersion: 7, kind: 'rollback' })
  t.equal(world.ruleSets.active().version, 7)
})
