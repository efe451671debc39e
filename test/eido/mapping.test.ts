import t from 'tap'
import { AppError } from '../../src/http/errors.js'
import { isStorableText } from '../../src/http/storable.js'
import { eidoEventId, eidoToCallEvent } from '../../src/eido/map-in.js'
import { readPidfLo, writePidfLo } from '../../src/eido/pidf-lo.js'
import { eidoInSchema } from '../../src/eido/schemas.js'
import { eidoFixture, TWINS } from './fixtures/index.js'

const parse = (doc: unknown) => eidoInSchema.parse(doc)

t.test('each fixture maps onto its hand-written native twin', async (t) => {
  for (const [name, twin] of Object.entries(TWINS)) {
    const doc = eidoFixture(name)
    const event = eidoToCallEvent(parse(doc), { callKnown: false })
    t.equal(event.type, 'call.created', name)
    t.equal(event.occurredAt, new Date(doc.lastUpdateTimeStamp).toISOString(), name)
    t.same(event.call, twin.call, name)
    t.strictSame(Object.keys(event.call).sort(), Object.keys(twin.call).sort(), `${name}: nothing more, nothing less`)
  }
})

t.test('unknown components and fields are ignored, not rejected', async (t) => {
  const doc = eidoFixture('mental-health-crisis')
  t.ok('vehicleComponent' in doc && 'someFutureComponent' in doc, 'the fixture carries components the service does not read')
  t.ok(eidoInSchema.safeParse(doc).success)
})

t.test('status: first document creates, later ones update, a closed incident closes with its APCO disposition', async (t) => {
  const doc = parse(eidoFixture('mental-health-crisis'))
  t.equal(eidoToCallEvent(doc, { callKnown: true }).type, 'call.updated')
  // A repeat of a stored document keeps the type it was stored with, so its body hash matches.
  t.equal(eidoToCallEvent(doc, { callKnown: true, storedType: 'call.created' }).type, 'call.created')
  const closing = structuredClone(doc)
  closing.incidentComponent.incidentStatusCommonRegistryText = ['Closed']
  closing.incidentComponent.dispositionComponent = [
    { $id: 'd-1', dispositionCommonRegistryCode: '99' },
    { $id: 'd-2', dispositionCommonRegistryCode: '05', dispositionPrimaryIndicator: true },
  ]
  const closed = eidoToCallEvent(closing, { callKnown: true })
  t.equal(closed.type, 'call.closed')
  t.equal(closed.call.disposition, 'resolved_by_phone')
  closing.incidentComponent.dispositionComponent = [{ $id: 'd-3', dispositionCommonRegistryCode: '15' }]
  t.equal(eidoToCallEvent(closing, { callKnown: true }).call.disposition, 'referred_crisis_center')
  closing.incidentComponent.dispositionComponent = [{ $id: 'd-4', dispositionCommonRegistryCode: '42' }]
  t.equal(eidoToCallEvent(closing, { callKnown: true }).call.disposition, 'apco-42', 'another APCO code survives the round trip')
  // A disposition on an active incident is not a close: the native contract refuses it, the mapping leaves it out.
  const active = structuredClone(closing)
  active.incidentComponent.incidentStatusCommonRegistryText = ['Active']
  t.equal(eidoToCallEvent(active, { callKnown: true }).call.disposition, undefined)
})

t.test('the eventId comes from $id and lastUpdateTimeStamp (as an instant)', async (t) => {
  const a = eidoEventId({ $id: 'X-1', lastUpdateTimeStamp: '2026-11-23T09:14:05.120-06:00' })
  t.equal(a, eidoEventId({ $id: 'X-1', lastUpdateTimeStamp: '2026-11-23T15:14:05.120Z' }), 'the same instant written two ways')
  t.not(a, eidoEventId({ $id: 'X-1', lastUpdateTimeStamp: '2026-11-23T15:14:05.121Z' }))
  t.not(a, eidoEventId({ $id: 'X-2', lastUpdateTimeStamp: '2026-11-23T15:14:05.120Z' }))
  t.ok(a.length <= 128 && !a.includes(':'))
})

t.test('mapping errors name the EIDO component and field', async (t) => {
  const names = (doc: unknown): string[] => {
    try {
      eidoToCallEvent(parse(doc), { callKnown: false })
    } catch (err) {
      if (err instanceof AppError && err.code === 'validation-failed') return (err.invalidParams ?? []).map((p) => p.name)
      throw err
    }
    return []
  }
  const dangling = eidoFixture('mental-health-crisis')
  dangling.incidentComponent.personReference = [{ $ref: 'nobody' }]
  t.same(names(dangling), ['incidentComponent.personReference.0.$ref'])

  const badFacts = eidoFixture<{ additionalDataComponent: { additionalDataByValue: string }[] }>('overdose-additional-data')
  badFacts.additionalDataComponent[1]!.additionalDataByValue = '{"flags":{"weapon":true}}'
  t.same(names(badFacts), ['additionalDataComponent.1.additionalDataByValue.flags.weapon'])
  badFacts.additionalDataComponent[1]!.additionalDataByValue = 'not json'
  t.same(names(badFacts), ['additionalDataComponent.1.additionalDataByValue'])

  const badAgency = eidoFixture<{ agencyComponent: { $id: string }[] }>('overdose-additional-data')
  badAgency.agencyComponent[0]!.$id = 'urn:nena:agency:wsp pd'
  t.same(names(badAgency), ['agencyComponent.0.$id'])

  const badPoint = eidoFixture<{ locationComponent: { locationByValue: string }[] }>('mental-health-crisis')
  badPoint.locationComponent[0]!.locationByValue = badPoint.locationComponent[0]!.locationByValue.replace('44.73 -92.85', 'north')
  t.same(names(badPoint), ['locationComponent.0.locationByValue'])

  const longName = eidoFixture<{ personComponent: { ncPersonComponent: { PersonName: Record<string, string> } }[] }>('weapons-patient')
  longName.personComponent[0]!.ncPersonComponent.PersonName = { PersonGivenName: 'x'.repeat(100), PersonMiddleName: 'y', PersonSurName: 'z'.repeat(100) }
  t.same(names(longName), ['personComponent.0.ncPersonComponent.PersonName', 'personComponent.0.ncPersonComponent.PersonName'], 'too long for the call contract, as caller and as subject')
})

t.test('PIDF-LO: what is written is read back', async (t) => {
  const loc = { address: '1200 Vermillion St & 2nd <rear>', city: 'Hastings', lat: 44.73, lon: -92.85 }
  t.same(readPidfLo(writePidfLo('DC26-1', loc)), loc)
  t.same(readPidfLo(writePidfLo('DC26-1', { address: 'Behind the library' })), { address: 'Behind the library' })
  t.same(readPidfLo('<presence/>'), {})
})

t.test('a description cut at its 4,000 characters never keeps half of a character', async (t) => {
  const doc = parse(eidoFixture('mental-health-crisis'))
  // 3,999 units, then an emoji (two UTF-16 units): a plain cut at 4,000 would keep its first half.
  const notes = [{ ...doc.notesComponent![0]!, notesActionComments: `${'x'.repeat(3999)}\u{1F600} and more` }]
  const event = eidoToCallEvent({ ...doc, notesComponent: notes, incidentComponent: { ...doc.incidentComponent, notesReference: [{ $ref: notes[0]!.$id }] } }, { callKnown: false })
  const d = event.call.description!
  t.equal(d, 'x'.repeat(3999))
  t.ok(isStorableText(d), 'no lone surrogate for Postgres to refuse')
  const short = eidoToCallEvent({ ...doc, notesComponent: [{ ...notes[0]!, notesActionComments: 'calm \u{1F600}' }], incidentComponent: { ...doc.incidentComponent, notesReference: [{ $ref: notes[0]!.$id }] } }, { callKnown: false })
  t.equal(short.call.description, 'calm \u{1F600}', 'a short one is kept whole')
})
