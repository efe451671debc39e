/**
 * The words cad-router and EIDO translate between: registry values on the EIDO side, the service's
 * own vocabulary on the other. The README's "EIDO" section documents the same tables.
 */
import type { AssignmentStatus } from '../assignments/state-machine.js'
import type { FlagName, QueueName } from '../routing/index.js'

/** `personIncidentRoleRegistryText` values, normalised (lower case, letters only). */
export const CALLER_ROLES: ReadonlySet<string> = new Set(['caller', 'reportingparty'])
/** The subject of the call is the first person with one of these roles, in the incident's order. */
export const SUBJECT_ROLES: ReadonlySet<string> = new Set(['subject', 'personofinterest', 'patient'])

/** `IdentificationCategoryText` of the NIEM identification that carries the county person id. */
export const COUNTY_PERSON_ID_CATEGORY = 'CountyPersonId'

/** The `urlPurpose` of the additional data that carries routing facts as JSON. */
export const ROUTING_FACTS_PURPOSE = 'urn:cad-router:routing-facts'

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

/** APCO common disposition codes ↔ the service's dispositions. */
export const DISPOSITION_CODES: Readonly<Record<string, string>> = {
  '05': 'resolved_by_phone',
  '15': 'referred_crisis_center',
}
export const DISPOSITION_TO_CODE: Readonly<Record<string, string>> = {
  resolved_by_phone: '05',
  referred_crisis_center: '15',
  referred_case_management: '15',
}
/** Another APCO code is kept as `apco-<code>` so it survives the round trip. */
export const APCO_DISPOSITION_PREFIX = 'apco-'

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
