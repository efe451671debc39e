import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import t from 'tap'
import type { z } from 'zod'
import type { callViewSchema, CallEvent } from '../../src/calls/schemas.js'
import { eidoToCallEvent } from '../../src/eido/map-in.js'
import { callToEido } from '../../src/eido/map-out.js'
import { eidoInSchema, eidoOutSchema } from '../../src/eido/schemas.js'
import { FLAG_NAMES, ROUTES, type FlagName } from '../../src/routing/index.js'
import { ruleSet } from '../routing/fixtures/helpers.js'

type CallView = z.infer<typeof callViewSchema>

const word = fc.stringMatching(/^[A-Za-z][A-Za-z'&<>.-]{0,11}$/)
const words = (max: number) => fc.array(word, { minLength: 1, maxLength: max }).map((w) => w.join(' '))
const coordinate = (limit: number) => fc.double({ min: -limit, max: limit, noNaN: true, noDefaultInfinity: true }).map((x) => x || 0)

const location = fc
  .record(
    {
      address: fc.oneof(words(5), fc.tuple(fc.integer({ min: 1, max: 99999 }), words(4)).map(([n, w]) => `${n} ${w}`)),
      city: words(2),
      lat: coordinate(90),
      lon: coordinate(180),
    },
    { requiredKeys: [] },
  )
  // A point needs both halves, and an empty location is no location.
  .filter((l) => ('lat' in l) === ('lon' in l) && Object.keys(l).length > 0)

const call = fc.record(
  {
    callId: fc.stringMatching(/^[A-Za-z0-9:._-]{1,100}$/).filter((id) => id !== '.' && id !== '..'), // a URL cannot name those
    agency: fc.oneof(fc.constant('hastings-pd'), fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,30}$/)),
    // APCO codes the rule set lists, an agency's own code it maps (10-56, for hastings-pd), and
    // codes it does not know, lower case, spaces and colons included.
    natureCode: fc.oneof(
      fc.constantFrom(...ruleSet.document.natureCodes),
      fc.constantFrom('10-56', 'edp', 'Suicide threat', 'urn:x:1'),
      fc.stringMatching(/^[A-Za-z0-9: -]{1,32}$/).filter((c) => c.trim() === c && c.length > 0),
    ),
    priority: fc.integer({ min: 1, max: 5 }),
    location,
    caller: fc.record({ phone: fc.stringMatching(/^\+?[0-9-]{3,20}$/), name: words(3) }, { requiredKeys: ['name'] }),
    subject: fc.record({ personId: fc.stringMatching(/^P-[0-9]{1,8}$/), name: words(3), birthDate: fc.constantFrom('1987-04-12', '2001-12-31') }, { requiredKeys: [] }).filter((s) => Object.keys(s).length > 0),
    description: fc.array(words(8), { minLength: 1, maxLength: 3 }).map((lines) => lines.join('\n')),
    flags: fc.record(Object.fromEntries(FLAG_NAMES.map((f) => [f, fc.boolean()])) as Record<FlagName, fc.Arbitrary<boolean>>),
    dispatcherOverride: fc.constantFrom(...ROUTES),
  },
  { requiredKeys: ['callId', 'agency', 'natureCode', 'priority', 'flags'] },
)

// The service's dispositions, APCO codes it keeps, and whatever else a CAD may close a call with.
const disposition = fc.oneof(
  fc.constantFrom('resolved_by_phone', 'referred_crisis_center', 'referred_case_management', 'transported', 'no_contact', 'apco-42', 'apco-07', 'apco-05', 'apco-'),
  fc.string({ minLength: 1, maxLength: 64 }),
)
const closing = fc.option(disposition, { nil: undefined })
/** Completed assignments' dispositions: never to be read as the call's. */
const assignmentDispositions = fc.array(disposition, { maxLength: 3 })

function viewOf(c: CallEvent['call'], disposition: string | undefined, assignmentDispositions: string[] = []): CallView {
  const at = '2026-11-23T15:00:00.000Z'
  return {
    callId: c.callId,
    agency: c.agency,
    status: disposition ? 'closed' : 'open',
    natureCode: c.natureCode,
    priority: c.priority,
    route: 'police',
    mentalHealth: false,
    disposition: disposition ?? null,
    flags: c.flags,
    dispatcherOverride: c.dispatcherOverride ?? null,
    location: c.location ?? null,
    caller: c.caller ?? null,
    subject: c.subject ?? null,
    description: c.description ?? null,
    createdAt: at,
    updatedAt: at,
    closedAt: disposition ? at : null,
    events: [],
    decisions: [],
    assignments: assignmentDispositions.map((d, i) => ({ id: `a-${i}`, agency: c.agency, queue: 'cru', role: 'primary', status: 'completed', disposition: d, dueAt: null, caseManager: null, createdAt: at, transitions: [] })),
  }
}

t.test('any call written as an EIDO validates and maps back onto the same call, routed on the same code', async (t) => {
  let agencyCodes = 0
  fc.assert(
    fc.property(call, closing, assignmentDispositions, (c, disposition, assigned) => {
      // As GET /v1/calls/{id}/eido writes it: the incident type by the rule set's reading of the code.
      const routed = ruleSet.natureCodeOf(c.agency, c.natureCode)
      const out = callToEido(viewOf(c, disposition, assigned), routed)
      if (!eidoOutSchema.safeParse(out).success) return false
      const back = eidoToCallEvent(eidoInSchema.parse(out))
      // An agency's own code the rule set maps comes back as the APCO code it routes on (the README:
      // incidentTypeInternalCode is not read); every other code comes back as it was.
      if (routed.known && routed.code !== c.natureCode) agencyCodes++
      const natureCode = routed.known ? routed.code : c.natureCode
      const routesAlike = isDeepStrictEqual(ruleSet.natureCodeOf(back.call.agency, back.call.natureCode), routed)
      // Through JSON: fast-check's records have no prototype, the mapping's have Object's.
      const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v))
      return (
        routesAlike &&
        isDeepStrictEqual(plain(back.call), plain({ ...c, natureCode, ...(disposition ? { disposition } : {}) })) &&
        back.type === (disposition ? 'call.closed' : 'call.created')
      )
    }),
    { numRuns: 300 },
  )
  t.ok(agencyCodes > 0, `agency codes the rule set maps were among them (${agencyCodes})`)
  t.pass('300 generated calls survived the round trip')
})
