/**
 * A component or field the service does not read is accepted and ignored, as the README promises:
 * cad-router's own limits (lengths, non-empty ids) apply to the values a call takes, when the mapping
 * reads them, and a value that is read and breaks one is still a 400 naming its EIDO field. NIEM's
 * xs:date may carry a time zone: a birth date written so is taken, without it.
 */
import t from 'tap'
import { AppError } from '../../src/http/errors.js'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { eidoInSchema } from '../../src/eido/schemas.js'
import { createWorld } from '../helpers/world.js'
import { eidoFixture } from './fixtures/index.js'

const world = await createWorld(t)
const { app } = world

// The parts of the mental-health-crisis fixture the cases change: person 0 is the caller, 1 the
// subject; location 0 is the incident's, 1 the caller's (referenced by nothing); no additional data.
interface Person {
  $id: string
  personIncidentRoleRegistryText: string[]
  ncPersonComponent: {
    PersonName?: Record<string, string>
    PersonBirthDate?: Record<string, string>
    PersonOtherIdentification?: { IdentificationID: string; IdentificationCategoryText?: string }[]
  }
}
type Doc = {
  personComponent: Person[]
  locationComponent: { locationByValue?: string; locationDescriptionText?: string }[]
  notesComponent: { $id: string; notesActionComments: string }[]
  additionalDataComponent?: { $id: string; urlPurpose?: string; additionalDataByValue: string }[]
}

let n = 0
/** The fixture under a fresh $id, so each case is its own incident. */
function fresh() {
  const doc = eidoFixture<Doc>('mental-health-crisis')
  doc.$id = `${doc.$id}-unread-${++n}`
  return doc
}

interface Problem {
  code: string
  invalidParams?: { name: string; reason: string }[]
}
const postEido = (doc: unknown) => app.inject({ method: 'POST', url: '/v1/eido', payload: doc as object })
const subjectOf = async (callId: string) =>
  (await app.inject({ method: 'GET', url: `/v1/calls/${encodeURIComponent(callId)}` })).json<{ subject: { personId?: string; name?: string; birthDate?: string } | null }>().subject

const PIDF_20K = `<presence xmlns="urn:ietf:params:xml:ns:pidf">${'<!-- cell sector history -->'.repeat(700)}</presence>`

t.test('what the service does not read is accepted and ignored', async (t) => {
  const cases: { name: string; change: (d: ReturnType<typeof fresh>) => void }[] = [
    {
      name: 'an additional data entry of 20,000 characters that is not the routing facts',
      change: (d) => (d.additionalDataComponent = [{ $id: 'ad-cad-dump', urlPurpose: 'urn:example:cad-dump', additionalDataByValue: 'A'.repeat(20_000) }]),
    },
    { name: 'an unreferenced caller location of 20,000 characters', change: (d) => (d.locationComponent[1]!.locationByValue = PIDF_20K) },
    { name: 'an unreferenced location with a 600-character description', change: (d) => (d.locationComponent[1]!.locationDescriptionText = 'x'.repeat(600)) },
    {
      name: 'a witness with an empty IdentificationID and a 150-character given name',
      change: (d) =>
        d.personComponent.push({
          $id: 'person-witness',
          personIncidentRoleRegistryText: ['Witness'],
          ncPersonComponent: { PersonName: { PersonGivenName: 'g'.repeat(150) }, PersonOtherIdentification: [{ IdentificationID: '', IdentificationCategoryText: 'DriverLicense' }] },
        }),
    },
    {
      name: 'the subject’s other identification, empty, beside the county id',
      change: (d) => d.personComponent[1]!.ncPersonComponent.PersonOtherIdentification!.push({ IdentificationID: '', IdentificationCategoryText: 'DriverLicense' }),
    },
    {
      name: 'name parts of 150 characters beside the full name that is read',
      change: (d) => (d.personComponent[1]!.ncPersonComponent.PersonName = { PersonFullName: 'Jonas Ekdahl', PersonGivenName: 'j'.repeat(150) }),
    },
  ]
  for (const c of cases) {
    const doc = fresh()
    c.change(doc)
    const res = await postEido(doc)
    t.equal(res.statusCode, 201, `${c.name}: ${res.body.slice(0, 300)}`)
  }
})

t.test('a birth date written as an xs:date with a time zone is taken without it', async (t) => {
  for (const date of ['1987-04-12Z', '1987-04-12z', '1987-04-12-06:00', '1987-04-12+05:30']) {
    const doc = fresh()
    doc.personComponent[1]!.ncPersonComponent.PersonBirthDate = { Date: date }
    const res = await postEido(doc)
    t.equal(res.statusCode, 201, `${date}: ${res.body.slice(0, 300)}`)
    t.equal((await subjectOf(doc.$id))?.birthDate, '1987-04-12', `${date}: the calendar date`)
  }
  for (const date of ['1987-04-12+5', '1987-02-30Z', '1987-04-12 Z']) {
    const doc = fresh()
    doc.personComponent[1]!.ncPersonComponent.PersonBirthDate = { Date: date }
    const res = await postEido(doc)
    t.equal(res.statusCode, 400, `${date}: not an xs:date`)
    t.ok(res.json<Problem>().invalidParams?.some((p) => p.name === 'personComponent.1.ncPersonComponent.PersonBirthDate.Date'), `${date}: names the field`)
  }
})

t.test('what the service reads is still held to its limits: a 400 naming the field', async (t) => {
  const cases: { name: string; change: (d: ReturnType<typeof fresh>) => void; field: string }[] = [
    {
      name: 'routing facts of 16,001 characters',
      change: (d) => (d.additionalDataComponent = [{ $id: 'ad-facts', urlPurpose: 'urn:cad-router:routing-facts', additionalDataByValue: `{"flags":{}}${' '.repeat(16_001 - 12)}` }]),
      field: 'additionalDataComponent.0.additionalDataByValue',
    },
    { name: 'the incident’s location of 20,000 characters', change: (d) => (d.locationComponent[0]!.locationByValue = PIDF_20K), field: 'locationComponent.0.locationByValue' },
    {
      name: 'the incident’s location described in 501 characters, with no civic address',
      change: (d) => {
        delete d.locationComponent[0]!.locationByValue
        d.locationComponent[0]!.locationDescriptionText = 'x'.repeat(501)
      },
      field: 'locationComponent.0.locationDescriptionText',
    },
    {
      name: 'an empty county person id on the subject',
      change: (d) => (d.personComponent[1]!.ncPersonComponent.PersonOtherIdentification![0]!.IdentificationID = ''),
      field: 'personComponent.1.ncPersonComponent.PersonOtherIdentification.0.IdentificationID',
    },
    {
      name: 'a county person id of 65 characters',
      change: (d) => (d.personComponent[1]!.ncPersonComponent.PersonOtherIdentification![0]!.IdentificationID = 'P'.repeat(65)),
      field: 'personComponent.1.ncPersonComponent.PersonOtherIdentification.0.IdentificationID',
    },
    {
      name: 'a caller’s given name of 101 characters',
      change: (d) => (d.personComponent[0]!.ncPersonComponent.PersonName = { PersonGivenName: 'm'.repeat(101), PersonSurName: 'Lindqvist' }),
      field: 'personComponent.0.ncPersonComponent.PersonName.PersonGivenName',
    },
    {
      name: 'a subject’s full name of 201 characters',
      change: (d) => (d.personComponent[1]!.ncPersonComponent.PersonName = { PersonFullName: 'j'.repeat(201) }),
      field: 'personComponent.1.ncPersonComponent.PersonName.PersonFullName',
    },
  ]
  for (const c of cases) {
    const doc = fresh()
    c.change(doc)
    const res = await postEido(doc)
    t.equal(res.statusCode, 400, c.name)
    const problem = res.json<Problem>()
    t.equal(problem.code, 'validation-failed', c.name)
    t.same(problem.invalidParams?.map((p) => p.name), [c.field], `${c.name}: names ${c.field} and nothing else`)
  }
})

t.test('a note that is read is held to 64 KiB; one that is not read is not', async (t) => {
  // Past what a default body carries, so checked on the mapping itself.
  const doc = eidoInSchema.parse(fresh())
  const long = { $id: 'note-long', notesActionComments: 'n'.repeat(64 * 1024 + 1) }
  const names = (incidentNotes: string[]) => {
    try {
      eidoToCallEvent({ ...doc, notesComponent: [...doc.notesComponent!, long], incidentComponent: { ...doc.incidentComponent!, notesReference: incidentNotes.map(($ref) => ({ $ref })) } })
    } catch (err) {
      if (err instanceof AppError) return (err.invalidParams ?? []).map((p) => p.name)
      throw err
    }
    return []
  }
  t.same(names(['note-1', 'note-long']), ['notesComponent.2.notesActionComments'], 'referenced by the incident: read, refused by name')
  t.same(names(['note-1']), [], 'not referenced: not read, not refused')
})
