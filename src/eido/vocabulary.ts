/**
 * The words cad-router and EIDO translate between: registry values on the EIDO side, the service's
 * own vocabulary on the other. The README's "EIDO" section documents the same tables.
 */
import type { AssignmentStatus } from '../assignments/state-machine.js'
import type { FlagName, QueueName } from '../routing/index.js'

/**
 * `table[key]` if the table has that key itself. Keys come from documents: a plain `table[key]` would
 * answer `toString` or `constructor` with Object.prototype's function.
 */
export const lookUp = <V>(table: Readonly<Record<string, V>>, key: string): V | undefined => (Object.hasOwn(table, key) ? table[key] : undefined)

/** `personIncidentRoleRegistryText` values, normalised (lower case, letters only). */
export const CALLER_ROLES: ReadonlySet<string> = new Set(['caller', 'reportingparty'])
/** The subject of the call is the first person with one of these roles, in the incident's order. */
export const SUBJECT_ROLES: ReadonlySet<string> = new Set(['subject', 'personofinterest', 'patient'])

/** `IdentificationCategoryText` of the NIEM identification that carries the county person id. */
export const COUNTY_PERSON_ID_CATEGORY = 'CountyPersonId'

/** The `urlPurpose` of the additional data that carries routing facts as JSON. */
export const ROUTING_FACTS_PURPOSE = 'urn:cad-router:routing-facts'

/** What an APCO ANS 2.103 incident type code looks like: `EDP`, `SUICTHRT`, … */
export const APCO_INCIDENT_TYPE = /^[A-Z0-9]+$/

/**
 * A call whose nature code routes on no code the rule set lists (an unknown code, or an agency's
 * own that its map does not cover) has no APCO code, and `incidentTypeCommonRegistryText` is
 * required: it is written as this URN followed by the call's code, verbatim, which reads back as that
 * very code. The registry has no "unknown" type; an APCO code can never be mistaken for the URN.
 */
export const OWN_NATURE_CODE_PREFIX = 'urn:cad-router:nature-code:'

/** An `incidentTypeCommonRegistryText` → the call's nature code. */
export const natureCodeOfIncidentType = (type: string): string => (type.startsWith(OWN_NATURE_CODE_PREFIX) ? type.slice(OWN_NATURE_CODE_PREFIX.length) : type)

/**
 * The call's nature code → its incident type: the APCO code it routes on where the rule set lists
 * one (the agency's own code then goes in `incidentTypeInternalCode`), else the URN above. `routed`
 * is the rule set's answer (CompiledRuleSet.natureCodeOf); without it the code cannot be vouched for.
 */
export function incidentTypeOf(natureCode: string, routed: { code: string; known: boolean } | undefined): { common: string; internal?: string } {
  const common = routed?.known && APCO_INCIDENT_TYPE.test(routed.code) ? routed.code : `${OWN_NATURE_CODE_PREFIX}${natureCode}`
  return common === natureCode ? { common } : { common, internal: natureCode }
}

/** Caution registry values (and sub-registry values), normalised, → the flag they raise. */
export const CAUTION_FLAGS: Readonly<Record<string, FlagName>> = {
  weapon: 'weapons',
  weapons: 'weapons',
  firearm: 'weapons',
  armed: 'weapons',
  violence: 'violence',
  violent: 'violence',
  threattoothers: 'threatToOthers',
  threat: 'threatToOthers',
  crimeinprogress: 'crimeInProgress',
  medical: 'medicalEmergency',
  medicalemergency: 'medicalEmergency',
  injury: 'injury',
  mentalhealth: 'mentalHealth',
  mentalillness: 'mentalHealth',
  suicidal: 'suicidalIdeation',
  suicidalideation: 'suicidalIdeation',
  meansathand: 'meansAtHand',
  substanceuse: 'substanceUse',
  drugs: 'substanceUse',
  alcohol: 'substanceUse',
  coresponserequested: 'coResponseRequested',
}

/** The caution each raised flag is written back as. */
export const FLAG_CAUTIONS: Readonly<Record<FlagName, string>> = {
  weapons: 'Weapons',
  violence: 'Violence',
  threatToOthers: 'ThreatToOthers',
  crimeInProgress: 'CrimeInProgress',
  medicalEmergency: 'MedicalEmergency',
  injury: 'Injury',
  mentalHealth: 'MentalHealth',
  suicidalIdeation: 'Suicidal',
  meansAtHand: 'MeansAtHand',
  substanceUse: 'SubstanceUse',
  coResponseRequested: 'CoResponseRequested',
}

/** STA-023 call priority → the service's 1–5 priority, when the incident carries no number. */
export const PRIORITY_IDENTIFIERS = { highest: 1, high: 2, normal: 3, low: 4, lowest: 5 } as const
export const DEFAULT_PRIORITY = 3

/** APCO common disposition codes ↔ the service's dispositions: one to one, so each reads back as itself. */
export const DISPOSITION_CODES: Readonly<Record<string, string>> = {
  '05': 'resolved_by_phone',
  '15': 'referred_crisis_center',
}
const DISPOSITION_TO_CODE: Readonly<Record<string, string>> = Object.fromEntries(Object.entries(DISPOSITION_CODES).map(([code, d]) => [d, code]))
/** Another APCO code is kept as `apco-<code>` so it survives the round trip. */
export const APCO_DISPOSITION_PREFIX = 'apco-'
/**
 * A disposition with no APCO code of its own (`transported`, `referred_case_management`, a CAD's own
 * word) is written as this URN followed by the disposition, verbatim. The registry has no code for
 * it and the field is required; an APCO code (letters and digits) can never be mistaken for it.
 */
export const OWN_DISPOSITION_PREFIX = 'urn:cad-router:disposition:'
/** What an APCO disposition code looks like: `05`, `15`, … */
export const APCO_DISPOSITION_CODE = /^[A-Za-z0-9]{1,8}$/

/** A `dispositionCommonRegistryCode` → the service's disposition; undefined when it is neither form. */
export function dispositionOfCode(code: string): string | undefined {
  // The prefix alone names no disposition: refused, rather than a close that says nothing of its end.
  if (code.startsWith(OWN_DISPOSITION_PREFIX)) return code.slice(OWN_DISPOSITION_PREFIX.length) || undefined
  if (APCO_DISPOSITION_CODE.test(code)) return lookUp(DISPOSITION_CODES, code) ?? `${APCO_DISPOSITION_PREFIX}${code}`
  return undefined
}

/**
 * The service's disposition → its `dispositionCommonRegistryCode`: the APCO code where one reads back
 * as this very disposition, else the disposition under OWN_DISPOSITION_PREFIX. (`apco-05` is not
 * written as `05`: that reads back as `resolved_by_phone`.)
 */
export function codeOfDisposition(disposition: string): string {
  const apco = lookUp(DISPOSITION_TO_CODE, disposition) ?? (disposition.startsWith(APCO_DISPOSITION_PREFIX) ? disposition.slice(APCO_DISPOSITION_PREFIX.length) : undefined)
  return apco !== undefined && dispositionOfCode(apco) === disposition ? apco : `${OWN_DISPOSITION_PREFIX}${disposition}`
}

/** Responder pools as emergency resources: registry type and resource attribute. */
export const POOL_RESOURCES: Readonly<Record<QueueName, { type: string; attribute: string; name: string }>> = {
  police: { type: 'LawEnforcementUnit', attribute: 'LawEnforcementOfficer', name: 'Police' },
  cru: { type: 'CrisisInterventionUnit', attribute: 'CrisisInterventionSpecialist', name: 'Crisis Response Unit' },
  ems: { type: 'EmsUnit', attribute: 'Paramedic', name: 'EMS' },
  case_management: { type: 'CrisisInterventionUnit', attribute: 'CaseManager', name: 'County case management' },
  follow_up: { type: 'CrisisInterventionUnit', attribute: 'SocialWorker', name: 'Crisis follow-up' },
}

/** Assignment status → primary unit status. */
export const UNIT_STATUS: Readonly<Record<AssignmentStatus, 'Assigned' | 'AcknowledgedTransmission' | 'Dispatched' | 'Cleared' | 'AssignmentCancelled'>> = {
  reserved: 'Assigned',
  queued: 'Assigned',
  offered: 'Assigned',
  acknowledged: 'AcknowledgedTransmission',
  accepted: 'Dispatched',
  completed: 'Cleared',
  declined: 'AssignmentCancelled',
  cancelled: 'AssignmentCancelled',
  escalated: 'AssignmentCancelled',
  expired: 'AssignmentCancelled',
}

export const normalise = (s: string): string => s.toLowerCase().replace(/[^a-z]/g, '')
