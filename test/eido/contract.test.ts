import t from 'tap'
import { createWorld } from '../helpers/world.js'
import { eidoFixture } from './fixtures/index.js'

const world = await createWorld(t)
const { app, db } = world

const postEido = (doc: unknown, contentType = 'application/json') =>
  app.inject({ method: 'POST', url: '/v1/eido', payload: typeof doc === 'string' ? doc : JSON.stringify(doc), headers: { 'content-type': contentType } })

const count = async (table: 'call_events' | 'decisions' | 'assignments' | 'outbox') =>
  Number((await db.selectFrom(table).select((e) => e.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
const counts = async () => ({ events: await count('call_events'), decisions: await count('decisions'), assignments: await count('assignments'), outbox: await count('outbox') })

let n = 0
/** A fixture under a fresh $id, so each case is its own incident. */
function fresh<T extends object = object>(name: string) {
  const doc = eidoFixture<T>(name)
  doc.$id = `${doc.$id}-c${++n}`
  return doc
}

type Doc = Record<string, unknown>
const at = (doc: Doc, path: string): Doc => path.split('.').reduce<Doc>((o, k) => o[k] as Doc, doc)

t.test('malformed documents get a problem+json naming the component and field, and write nothing', async (t) => {
  const cases: { name: string; change: (d: Doc) => void; field: string }[] = [
    { name: 'no incident type', change: (d) => delete at(d, 'incidentComponent').incidentTypeCommonRegistryText, field: 'incidentComponent.incidentTypeCommonRegistryText' },
    { name: 'incident type not an APCO code', change: (d) => (at(d, 'incidentComponent').incidentTypeCommonRegistryText = 'emotionally disturbed'), field: 'incidentComponent.incidentTypeCommonRegistryText' },
    { name: 'priority out of range', change: (d) => (at(d, 'incidentComponent').incidentCommonPriorityNumber = 9), field: 'incidentComponent.incidentCommonPriorityNumber' },
    { name: 'no incident component', change: (d) => delete d.incidentComponent, field: 'incidentComponent' },
    { name: 'no agency', change: (d) => delete d.agencyComponent, field: 'agencyComponent' },
    { name: 'another EIDO version', change: (d) => (d.eidoVersion = '2.0'), field: 'eidoVersion' },
    { name: 'timestamp without offset', change: (d) => (d.lastUpdateTimeStamp = '2026-11-23T09:14:05'), field: 'lastUpdateTimeStamp' },
    { name: 'person without a role', change: (d) => delete (d.personComponent as Doc[])[1]!.personIncidentRoleRegistryText, field: 'personComponent.1.personIncidentRoleRegistryText' },
    { name: 'caution severity outside the enumeration', change: (d) => ((d.cautionComponent as Doc[])[0]!.cautionSeverity = 'extreme'), field: 'cautionComponent.0.cautionSeverity' },
    { name: 'call priority outside STA-023', change: (d) => ((d.callComponent as Doc[])[0]!.priorityIdentifier = 'urgent'), field: 'callComponent.0.priorityIdentifier' },
    { name: 'reference to a missing component', change: (d) => (at(d, 'incidentComponent').locationReference = [{ $ref: 'loc-nowhere' }]), field: 'incidentComponent.locationReference.0.$ref' },
    { name: 'a misspelt flag in the routing facts', change: (d) => (d.additionalDataComponent = [{ $id: 'ad', urlPurpose: 'urn:cad-router:routing-facts', additionalDataByValue: '{"flags":{"weapon":true}}' }]), field: 'additionalDataComponent.0.additionalDataByValue.flags.weapon' },
  ]
  const before = await counts()
  for (const c of cases) {
    const doc = fresh('mental-health-crisis') as Doc
    c.change(doc)
    const res = await postEido(doc)
    t.equal(res.statusCode, 400, c.name)
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', c.name)
    const problem = res.json<{ code: string; invalidParams: { name: string; reason: string }[] }>()
    t.equal(problem.code, 'validation-failed', c.name)
    t.ok(problem.invalidParams.some((p) => p.name === c.field), `${c.name}: names ${c.field} (got ${problem.invalidParams.map((p) => p.name).join(', ')})`)
  }
  t.same(await counts(), before, 'nothing stored')

  const notJson = await postEido('{"eidoVersion": ')
  t.equal(notJson.statusCode, 400)
  const wrongType = await postEido('<eido/>', 'application/xml')
  t.equal(wrongType.statusCode, 415)
})

t.test('idempotency: the same document is 201 then 200 with the same decision; same $id and time with other routing content is 409', async (t) => {
  const doc = fresh('mental-health-crisis')
  const first = await postEido(doc)
  t.equal(first.statusCode, 201)
  const before = await counts()

  const again = await postEido(doc)
  t.equal(again.statusCode, 200)
  t.same(again.json().decision, first.json().decision)

  // The same instant written with another offset, keys in another order: the same document.
  const { $id, ...rest } = doc
  const rewritten = { ...rest, lastUpdateTimeStamp: '2026-11-23T15:14:05.120Z', $id }
  const res3 = await postEido(rewritten)
  t.equal(res3.statusCode, 200)
  t.equal(res3.json().decision.id, first.json().decision.id)

  // A component the service does not read changes nothing it stores: still a repeat.
  const withVehicle = structuredClone(doc) as Doc
  ;(withVehicle.vehicleComponent as Doc[]).push({ $id: 'veh-2' })
  t.equal((await postEido(withVehicle)).statusCode, 200)

  // Routing content changed under the same $id and lastUpdateTimeStamp.
  const changed = structuredClone(doc) as Doc
  ;(changed.cautionComponent as Doc[]).push({ $id: 'c-w', cautionTypeInternalText: 'gun', cautionTypeCommonRegistryText: 'Weapons', cautionSeverity: 'high' })
  const conflict = await postEido(changed)
  t.equal(conflict.statusCode, 409)
  t.equal(conflict.json().code, 'event-conflict')
  t.same(await counts(), before, 'no repeat wrote anything')

  // A later document updates; the first one repeated after it is still a repeat (not turned into an update).
  const later = structuredClone(doc)
  later.lastUpdateTimeStamp = '2026-11-23T09:30:00-06:00'
  t.equal((await postEido(later)).statusCode, 201)
  const replay = await postEido(doc)
  t.equal(replay.statusCode, 200)
  t.same(replay.json().decision, first.json().decision)
  const types = await db.selectFrom('call_events').select('type').where('call_id', '=', doc.$id).orderBy('received_at').execute()
  t.same(types.map((e) => e.type), ['call.created', 'call.updated'])
})

t.test('an older document after a newer one is kept for the record and changes nothing', async (t) => {
  const newer = fresh('weapons-patient')
  const older = structuredClone(newer)
  older.lastUpdateTimeStamp = '2026-11-23T22:00:00Z'
  t.equal((await postEido(newer)).statusCode, 201)
  const res = await postEido(older)
  t.equal(res.statusCode, 201)
  t.equal(res.json().applied, false)
})

t.test('concurrent posts of one document store one decision', async (t) => {
  const doc = fresh('overdose-additional-data')
  const answers = await Promise.all(Array.from({ length: 6 }, () => postEido(doc)))
  t.same(answers.map((a) => a.statusCode).sort(), [200, 200, 200, 200, 200, 201])
  t.equal(new Set(answers.map((a) => a.json().decision.id)).size, 1)
})

t.test('documents NENA allows are taken, not refused', async (t) => {
  const callOf = async (callId: string) =>
    (await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}` })).json<{ status: string; description: string; subject: { birthDate?: string } | null }>()

  t.test('a closing narrative longer than 8,000 characters closes the call, cut at 4,000', async (t) => {
    const doc = fresh<{ notesComponent: { notesActionComments: string }[]; incidentComponent: Doc }>('mental-health-crisis')
    t.equal((await postEido(doc)).statusCode, 201)
    const close = structuredClone(doc)
    close.lastUpdateTimeStamp = '2026-11-23T10:30:00-06:00'
    close.incidentComponent.incidentStatusCommonRegistryText = ['Closed']
    close.notesComponent[1]!.notesActionComments = 'Narrative. '.repeat(1500)
    const res = await postEido(close)
    t.equal(res.statusCode, 201, res.body.slice(0, 300))
    const call = await callOf(doc.$id)
    t.equal(call.status, 'closed')
    t.equal(call.description.length, 4000)
  })

  t.test('a person with an empty role list', async (t) => {
    const doc = fresh<{ personComponent: Doc[] }>('mental-health-crisis')
    doc.personComponent.push({ $id: 'person-bystander', personIncidentRoleRegistryText: [] })
    const res = await postEido(doc)
    t.equal(res.statusCode, 201, res.body.slice(0, 300))
  })

  t.test('a birth date as a NIEM DateTime', async (t) => {
    const doc = fresh<{ personComponent: { ncPersonComponent: Doc }[] }>('mental-health-crisis')
    doc.personComponent[1]!.ncPersonComponent.PersonBirthDate = { DateTime: '1987-04-12T00:00:00-06:00' }
    const res = await postEido(doc)
    t.equal(res.statusCode, 201, res.body.slice(0, 300))
    t.equal((await callOf(doc.$id)).subject?.birthDate, '1987-04-12')
  })

  t.test('lower-case t and z: accepted, and the same instant as any other spelling of it', async (t) => {
    const doc = fresh<{ incidentComponent: Doc }>('mental-health-crisis')
    doc.lastUpdateTimeStamp = '2026-11-23t15:14:05.120z'
    doc.incidentComponent.lastUpdateTimeStamp = '2026-11-23t09:14:05.120-06:00'
    const first = await postEido(doc)
    t.equal(first.statusCode, 201, first.body.slice(0, 300))
    const again = await postEido({ ...doc, lastUpdateTimeStamp: '2026-11-23T09:14:05.120-06:00' })
    t.equal(again.statusCode, 200, 'a repeat, not another document')
    t.equal(again.json().decision.id, first.json().decision.id)
  })

  t.test('no incident component: a 400 that says why, and nothing stored', async (t) => {
    const doc = fresh('mental-health-crisis') as Doc
    delete doc.incidentComponent
    const before = await counts()
    const res = await postEido(doc)
    t.equal(res.statusCode, 400)
    const problem = res.json<{ invalidParams: { name: string; reason: string }[] }>()
    t.same(problem.invalidParams.map((p) => p.name), ['incidentComponent'])
    t.match(problem.invalidParams[0]!.reason, /routes a call on its incident type/)
    t.same(await counts(), before)
  })
})

t.test('personal data from the EIDO never reaches a log line', async (t) => {
  const text = world.logs.join('')
  t.ok(text.length > 0, 'something was logged')
  for (const secret of ['Lindqvist', 'Ekdahl', '651-555-0142', 'Vermillion', '1987-04-12', 'pacing', 'Moreau', 'Shannon Pkwy']) {
    t.notOk(text.includes(secret), `${secret} is not logged`)
  }
})
