/**
 * EIDO → the native call event. Pure: it reads nothing stored. A document does not say whether it
 * creates the call, so an open one maps to call.created and the ingest turns that into call.updated
 * under the call's lock (CallService.ingest's `typeByCall`), where no concurrent post can change
 * the answer.
 */
import { z } from 'zod'
import { CALLER_PHONE_MAX_LENGTH, callEventSchema, type CallEvent } from '../calls/schemas.js'
import { AppError, type InvalidParam } from '../http/errors.js'
import { duplicateMember } from '../http/json-body.js'
import { sha256 } from '../lib/canonical-json.js'
import { FLAG_NAMES, ROUTES, isAgencyId, type EventType, type FlagName } from '../routing/index.js'
import { readPidfLo } from './pidf-lo.js'
import type { EidoIn } from './schemas.js'
import { htmlText } from './text.js'
import {
  CALLER_ROLES,
  CAUTION_FLAGS,
  COUNTY_PERSON_ID_CATEGORY,
  DEFAULT_PRIORITY,
  dispositionOfCode,
  lookUp,
  natureCodeOfIncidentType,
  OWN_DISPOSITION_PREFIX,
  PRIORITY_IDENTIFIERS,
  ROUTING_FACTS_PURPOSE,
  SUBJECT_ROLES,
  normalise,
} from './vocabulary.js'

/**
 * A timestamp as the UTC instant it names. RFC 3339 lets `T` and `Z` be lower case; ECMAScript's date
 * format does not (V8 reads them only by a lenient fallback), so they are raised first.
 */
const asInstant = (stamp: string): string => new Date(stamp.toUpperCase()).toISOString()

/** The native eventId of an EIDO: its `$id` and `lastUpdateTimeStamp` (as an instant), hashed to fit. */
export function eidoEventId(doc: Pick<EidoIn, '$id' | 'lastUpdateTimeStamp'>): string {
  return `eido-${sha256(`${doc.$id}\n${asInstant(doc.lastUpdateTimeStamp)}`).slice(0, 40)}`
}

const routingFactsSchema = z
  .object({
    flags: z.object(Object.fromEntries(FLAG_NAMES.map((f) => [f, z.boolean().optional()])) as Record<FlagName, z.ZodOptional<z.ZodBoolean>>).strict().optional(),
    dispatcherOverride: z.enum(ROUTES).optional(),
  })
  .strict()

type Component = { $id: string }

/**
 * cad-router's own limits on the values a call takes from an EIDO (NENA sets none). They are checked
 * on what is read, when it is read: a component or field the service ignores is never refused over
 * them. A note may be as long as a 64 KiB body (the default limit) can carry, so the limit that
 * protects the service is the body's, and a long closing narrative is cut at the description's
 * 4,000 characters, never refused.
 */
const READ_LIMITS = {
  locationByValue: 16_000,
  locationDescriptionText: 500,
  routingFacts: 16_000,
  note: 64 * 1024,
  PersonFullName: 200,
  PersonGivenName: 100,
  PersonMiddleName: 100,
  PersonSurName: 100,
  countyPersonId: 64,
} as const

export function eidoToCallEvent(doc: EidoIn): CallEvent {
  const problems: InvalidParam[] = []
  /** Whether `value`, read from the EIDO field `name`, is within its limit; if not, the problem names it. */
  const within = (value: string | undefined, max: number, name: string): boolean => {
    if (value === undefined || value.length <= max) return true
    problems.push({ name, reason: `too long: at most ${max} characters` })
    return false
  }
  // NENA does not require an incident component (a call transfer has none yet), but only it carries
  // the incident type, and no call is routed without one: refused, by name, whatever else is there.
  if (!doc.incidentComponent) {
    problems.push({
      name: 'incidentComponent',
      reason:
        'cad-router routes a call on its incident type (incidentComponent.incidentTypeCommonRegistryText, an APCO code such as EDP), which no other component carries: send the document once the incident has a type',
    })
  }
  const incident: Partial<NonNullable<EidoIn['incidentComponent']>> = doc.incidentComponent ?? {}

  /** Resolves references into a component list; a dangling one is named by where it was made. */
  function resolve<T extends Component>(list: readonly T[] | undefined, ref: { $ref: string }, at: string): T | undefined {
    const hit = list?.find((c) => c.$id === ref.$ref)
    if (!hit) problems.push({ name: `${at}.$ref`, reason: `no component with $id "${ref.$ref}"` })
    return hit
  }
  const resolveAll = <T extends Component>(list: readonly T[] | undefined, refs: readonly { $ref: string }[] | undefined, at: string): T[] =>
    (refs ?? []).map((r, i) => resolve(list, r, `${at}.${i}`)).filter((c): c is T => c !== undefined)

  // Agency: the owning agency, else the one that last updated the incident or the document.
  const agencyRef = incident.updatedByAgencyReference?.$ref ?? doc.updatedByAgencyReference.$ref
  let agencyIndex = doc.agencyComponent.findIndex((a) => a.incidentOwningAgencyIndicator === true)
  if (agencyIndex < 0) agencyIndex = doc.agencyComponent.findIndex((a) => a.$id === agencyRef)
  if (agencyIndex < 0) agencyIndex = 0
  const agencyId = doc.agencyComponent[agencyIndex]!.$id.toLowerCase()
  if (!isAgencyId(agencyId)) {
    problems.push({ name: `agencyComponent.${agencyIndex}.$id`, reason: 'the owning agency $id must be an agency name cad-router knows (letters, digits, ".", "_", "-"; at most 64)' })
  }

  // Priority: the incident's common priority, else the call's STA-023 priority.
  const call = doc.callComponent?.[0]
  const priority = incident.incidentCommonPriorityNumber ?? (call?.priorityIdentifier ? PRIORITY_IDENTIFIERS[call.priorityIdentifier] : DEFAULT_PRIORITY)

  // Location: the incident's first, else the call's first, else the first listed.
  const locRef = incident.locationReference?.[0] ? { ref: incident.locationReference[0], at: 'incidentComponent.locationReference.0' } : call?.locationReference?.[0] ? { ref: call.locationReference[0], at: 'callComponent.0.locationReference.0' } : undefined
  const locationComp = locRef ? resolve(doc.locationComponent, locRef.ref, locRef.at) : doc.locationComponent?.[0]
  let location: CallEvent['call']['location']
  if (locationComp) {
    const index = doc.locationComponent!.indexOf(locationComp)
    const pidfLo = within(locationComp.locationByValue, READ_LIMITS.locationByValue, `locationComponent.${index}.locationByValue`) ? locationComp.locationByValue : undefined
    const read = pidfLo ? readPidfLo(pidfLo) : {}
    if (read.badPoint) problems.push({ name: `locationComponent.${index}.locationByValue`, reason: 'a gml:pos or gml:posList is not "latitude longitude" positions' })
    const { badPoint: _b, subAddress, ...plain } = read
    // The description stands in for a street only where there is none: only then is it read. The
    // unit, floor, … of a civic address without a street follow it; alone ("Unit 312") they are no
    // address, and as one they would be every building's, its prior calls theirs (the address key).
    const described = plain.address === undefined && within(locationComp.locationDescriptionText, READ_LIMITS.locationDescriptionText, `locationComponent.${index}.locationDescriptionText`)
    const description = described ? locationComp.locationDescriptionText?.trim() : undefined
    const address = plain.address ?? (description ? [description, subAddress].filter(Boolean).join(', ') : undefined)
    location = { ...plain, ...(address ? { address } : {}) }
    if (!Object.keys(location).length) location = undefined
  }

  // Persons: those the incident references first, then the rest as listed.
  const referenced = resolveAll(doc.personComponent, incident.personReference, 'incidentComponent.personReference')
  const persons = [...referenced, ...(doc.personComponent ?? []).filter((p) => !referenced.includes(p))]
  const hasRole = (p: (typeof persons)[number], roles: ReadonlySet<string>) => p.personIncidentRoleRegistryText.some((r) => roles.has(normalise(r)))
  const personAt = (p: (typeof persons)[number]) => `personComponent.${doc.personComponent!.indexOf(p)}`
  /** The person's name: the full name, else the parts; only the parts used are held to their limits. */
  const nameOf = (p: (typeof persons)[number]): string | undefined => {
    const n = p.ncPersonComponent?.PersonName
    if (!n) return undefined
    const parts = n.PersonFullName !== undefined ? (['PersonFullName'] as const) : (['PersonGivenName', 'PersonMiddleName', 'PersonSurName'] as const)
    for (const k of parts) within(n[k], READ_LIMITS[k], `${personAt(p)}.ncPersonComponent.PersonName.${k}`)
    return n.PersonFullName ?? (parts.map((k) => n[k]).filter(Boolean).join(' ') || undefined)
  }

  let caller: CallEvent['call']['caller']
  const callerPerson = persons.find((p) => hasRole(p, CALLER_ROLES))
  const callbackRef = callerPerson?.callBackReference ?? call?.callBackReference
  const callbackAt = callerPerson?.callBackReference ? `${personAt(callerPerson)}.callBackReference` : 'callComponent.0.callBackReference'
  const callback = callbackRef ? resolve(doc.callbackComponent, callbackRef, callbackAt) : undefined
  // A URI scheme is case-insensitive (RFC 3986 §3.1): `TEL:` is a phone number too.
  const phone = callback?.callBackInformationUri?.map((u) => (/^tel:/i.test(u) ? phoneOfTelUri(u) : undefined)).find((p) => p !== undefined)
  if (callerPerson || phone) {
    const name = callerPerson ? nameOf(callerPerson) : undefined
    caller = { ...(phone ? { phone } : {}), ...(name ? { name } : {}) }
  }

  let subject: CallEvent['call']['subject']
  const subjectPerson = persons.find((p) => hasRole(p, SUBJECT_ROLES))
  if (subjectPerson) {
    const name = nameOf(subjectPerson)
    // NIEM writes a date as a Date or a DateTime: a DateTime gives its date as written (a birth date
    // is a calendar date, not an instant to move to UTC).
    const born = subjectPerson.ncPersonComponent?.PersonBirthDate
    const birthDate = born?.Date ?? born?.DateTime?.slice(0, 10)
    // Of the person's identifications only the county's is read, and it must say something.
    const ids = subjectPerson.ncPersonComponent?.PersonOtherIdentification ?? []
    const county = ids.findIndex((o) => o.IdentificationCategoryText === COUNTY_PERSON_ID_CATEGORY)
    const countyAt = `${personAt(subjectPerson)}.ncPersonComponent.PersonOtherIdentification.${county}.IdentificationID`
    const personId = county < 0 ? undefined : ids[county]!.IdentificationID
    if (personId === '') problems.push({ name: countyAt, reason: `an empty ${COUNTY_PERSON_ID_CATEGORY}: leave the identification out when there is none` })
    else within(personId, READ_LIMITS.countyPersonId, countyAt)
    subject = { ...(personId ? { personId } : {}), ...(name ? { name } : {}), ...(birthDate ? { birthDate } : {}) }
  }

  // Description: the incident's notes, else every note, as plain text.
  const notes = incident.notesReference ? resolveAll(doc.notesComponent, incident.notesReference, 'incidentComponent.notesReference') : (doc.notesComponent ?? [])
  for (const n of notes) within(n.notesActionComments, READ_LIMITS.note, `notesComponent.${doc.notesComponent!.indexOf(n)}.notesActionComments`)
  const description = cutAt(notes.map((n) => htmlText(n.notesActionComments)).filter(Boolean).join('\n'), 4000) || undefined

  // Flags: raised by cautions and by the routing-facts additional data; a flag is never lowered.
  const flags = Object.fromEntries(FLAG_NAMES.map((f) => [f, false])) as Record<FlagName, boolean>
  for (const c of doc.cautionComponent ?? []) {
    for (const v of [c.cautionTypeCommonRegistryText, ...(c.cautionTypeCommonSubRegistryText ?? [])]) {
      const flag = lookUp(CAUTION_FLAGS, normalise(v))
      if (flag) flags[flag] = true
    }
  }
  let dispatcherOverride: CallEvent['call']['dispatcherOverride']
  doc.additionalDataComponent?.forEach((a, i) => {
    if (a.urlPurpose !== ROUTING_FACTS_PURPOSE) return
    const at = `additionalDataComponent.${i}.additionalDataByValue`
    if (!within(a.additionalDataByValue, READ_LIMITS.routingFacts, at)) return
    let value: unknown
    try {
      value = JSON.parse(a.additionalDataByValue ?? '')
    } catch {
      problems.push({ name: at, reason: `routing facts (${ROUTING_FACTS_PURPOSE}) must be a JSON object` })
      return
    }
    // JSON.parse keeps the last of two members: `"weapons": true, "weapons": false` must not read as
    // an unarmed call here any more than in a JSON body (src/http/json-body.ts).
    const twice = duplicateMember(a.additionalDataByValue!)
    if (twice !== undefined) {
      problems.push({ name: `${at}.${twice}`, reason: 'given more than once in the same object; give it once' })
      return
    }
    const parsed = routingFactsSchema.safeParse(value)
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const keys = issue.code === 'unrecognized_keys' ? issue.keys : [undefined]
        for (const k of keys) problems.push({ name: [at, ...issue.path.map(String), ...(k ? [k] : [])].join('.'), reason: k ? `unknown field "${k}"` : issue.message })
      }
      return
    }
    for (const [f, v] of Object.entries(parsed.data.flags ?? {})) if (v) flags[f as FlagName] = true
    if (parsed.data.dispatcherOverride) dispatcherOverride = parsed.data.dispatcherOverride
  })

  // Status: a closed incident closes the call. Any other document is written call.created: the
  // ingest makes it call.updated when the call exists (CallService.ingest's `typeByCall`).
  const closed = (incident.incidentStatusCommonRegistryText ?? []).some((s) => normalise(s) === 'closed')
  const type: EventType = closed ? 'call.closed' : 'call.created'

  // The call's disposition is the incident's primary one. NENA marks one primary per agency: the
  // owning agency's (the call's) comes first, then any agency's. One that does not say may stand in
  // (a CAD that never sets the indicator); one marked not primary never does: that is an assignment's
  // or another agency's, and the call may have ended otherwise.
  let disposition: string | undefined
  const dispositions = incident.dispositionComponent ?? []
  const owner = doc.agencyComponent[agencyIndex]!.$id
  const chosen =
    dispositions.find((d) => d.dispositionPrimaryIndicator === true && d.updatedByAgencyReference?.$ref === owner) ??
    dispositions.find((d) => d.dispositionPrimaryIndicator === true) ??
    dispositions.find((d) => d.dispositionPrimaryIndicator === undefined)
  const dispositionAt = `incidentComponent.dispositionComponent.${chosen ? dispositions.indexOf(chosen) : 0}.dispositionCommonRegistryCode`
  if (closed && chosen) {
    disposition = dispositionOfCode(chosen.dispositionCommonRegistryCode)
    if (disposition === undefined) problems.push({ name: dispositionAt, reason: `an APCO disposition code (e.g. 05) or ${OWN_DISPOSITION_PREFIX} and a disposition` })
  }

  if (problems.length) {
    // One person may be both caller and subject: each field it breaks is named once.
    const seenProblems = new Set<string>()
    throw invalid(problems.filter((p) => !seenProblems.has(`${p.name}\n${p.reason}`) && seenProblems.add(`${p.name}\n${p.reason}`)))
  }

  const event = {
    eventId: eidoEventId(doc),
    type,
    // As an instant, like the eventId: the same time written with another offset is the same document.
    occurredAt: asInstant(doc.lastUpdateTimeStamp),
    call: {
      callId: doc.$id,
      agency: agencyId,
      natureCode: natureCodeOfIncidentType(incident.incidentTypeCommonRegistryText!),
      priority,
      ...(location ? { location } : {}),
      // An empty person tells the routing nothing: leave it out, as a native event would.
      ...(caller && Object.keys(caller).length ? { caller } : {}),
      ...(subject && Object.keys(subject).length ? { subject } : {}),
      ...(description ? { description } : {}),
      flags,
      ...(dispatcherOverride ? { dispatcherOverride } : {}),
      ...(disposition ? { disposition } : {}),
    },
  }
  // The native contract has limits of its own (lengths, ranges): name the EIDO field that broke one.
  const checked = callEventSchema.safeParse(event)
  if (!checked.success) {
    const at = (list: readonly object[] | undefined, c: object | undefined, name: string) => (c && list ? `${name}.${list.indexOf(c)}` : undefined)
    const origin: Origin = {
      agency: `agencyComponent.${agencyIndex}`,
      ...opt('location', at(doc.locationComponent, locationComp, 'locationComponent')),
      ...opt('caller', at(doc.personComponent, callerPerson, 'personComponent')),
      ...opt('callback', at(doc.callbackComponent, callback, 'callbackComponent')),
      ...opt('subject', at(doc.personComponent, subjectPerson, 'personComponent')),
      disposition: dispositionAt,
    }
    throw invalid(checked.error.issues.map((i) => ({ name: eidoNameOf(i.path.map(String), origin), reason: i.message })))
  }
  return checked.data
}

/**
 * The number of a `tel:` URI, without the RFC 3966 parameters nobody dials (`;verstat=…` from the
 * carrier) but with an extension (`;ext=12`), which a call back to a switchboard needs and which
 * reads back as a `tel:` URI. A local number whose `;phone-context=` is a global prefix (`+1-651`)
 * becomes the global number (`+16515550142`): the area code is part of what a call back dials; one
 * whose context is a domain stays as written. The callback is optional: a number the call cannot
 * hold (none, or longer than its phone may be) is left out, never a reason to refuse the incident.
 */
function phoneOfTelUri(uri: string): string | undefined {
  const [local = '', ...params] = uri.slice(4).split(';')
  const context = params.map((p) => /^phone-context=(\+[\d().-]+)$/i.exec(p)?.[1]).find((c) => c !== undefined && /\d/.test(c))
  // RFC 3966's visual separators carry nothing a dialler needs.
  const digits = (s: string) => s.replace(/[().-]/g, '')
  const number = context !== undefined && /^[().-]*\d[\d().-]*$/.test(local) ? digits(context) + digits(local) : local
  if (!number || number.length > CALLER_PHONE_MAX_LENGTH) return undefined
  const ext = params.map((p) => /^ext=(.+)$/i.exec(p)?.[1]).find((e) => e !== undefined)
  const withExt = ext === undefined ? number : `${number};ext=${ext}`
  return withExt.length <= CALLER_PHONE_MAX_LENGTH ? withExt : number
}

const opt = <K extends string>(key: K, value: string | undefined) => (value === undefined ? {} : ({ [key]: value } as Record<K, string>))

const invalid = (problems: InvalidParam[]) => new AppError('validation-failed', `${problems.length} invalid field(s) in the EIDO`, { invalidParams: problems })

/** Where a native field came from in the EIDO, for error messages. */
function eidoNameOf(path: string[], origin: Origin): string {
  const [, field, sub] = path
  switch (field) {
    case 'callId':
      return '$id'
    case 'agency':
      return `${origin.agency}.$id`
    case 'natureCode':
      return 'incidentComponent.incidentTypeCommonRegistryText'
    case 'location':
      return `${origin.location ?? 'locationComponent'}.locationByValue`
    case 'caller':
      return sub === 'phone' ? `${origin.callback ?? 'callbackComponent'}.callBackInformationUri` : `${origin.caller ?? 'personComponent'}.ncPersonComponent.PersonName`
    case 'subject': {
      const at = `${origin.subject ?? 'personComponent'}.ncPersonComponent`
      return sub === 'birthDate' ? `${at}.PersonBirthDate.Date` : sub === 'personId' ? `${at}.PersonOtherIdentification` : `${at}.PersonName`
    }
    case 'description':
      return 'notesComponent.notesActionComments'
    case 'disposition':
      return origin.disposition
    default:
      return path.join('.')
  }
}

interface Origin {
  agency: string
  disposition: string
  location?: string
  caller?: string
  callback?: string
  subject?: string
}

/** The first `max` UTF-16 units of `s`, without half of a character cut at the end (Postgres refuses a lone surrogate). */
function cutAt(s: string, max: number): string {
  if (s.length <= max) return s
  const code = s.charCodeAt(max - 1)
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}
