/**
 * Zod schemas for the parts of a NENA EIDO document (NENA-STA-021, `EmergencyIncidentDataObjectType`)
 * that cad-router reads or writes. Written from the standard's component definitions; the field
 * names are the current ones (NENA's older sample uses outdated names).
 *
 * Inbound schemas are loose: unknown fields and unknown components pass untouched, because an EIDO
 * carries far more than a routing decision needs. They check the shape NENA gives every component
 * (types, enumerations, date formats); cad-router's own limits (lengths, non-empty ids) apply only to
 * the values a call takes, when the mapping reads them (map-in.ts), so a component the service does
 * not read is never refused over them. Outbound schemas are what GET …/eido promises.
 */
import { z } from 'zod'
import { CALL_ID_MAX_LENGTH } from '../calls/schemas.js'
import { instant } from '../http/storable.js'
import { OWN_NATURE_CODE_PREFIX } from './vocabulary.js'

/** A NIEM DateTime (xs:dateTime): unlike RFC 3339 the offset may be left out; `t` and `z` raised, as `instant` does. */
const NIEM_DATE_TIME = z
  .string()
  .overwrite((s) => s.toUpperCase())
  .pipe(z.iso.datetime({ offset: true, local: true }))
  .meta({ pattern: '^\\d{4}-\\d{2}-\\d{2}[Tt]\\d{2}:\\d{2}(?::\\d{2}(?:\\.\\d+)?)?(?:[Zz]|[+-]\\d{2}:\\d{2})?$' })

/**
 * A NIEM Date (xs:date), which may carry a time zone: the zone is dropped (a birth date is a calendar
 * date, as a DateTime's is read as written); `z` raised, as for a DateTime.
 */
const NIEM_DATE = z
  .string()
  .overwrite((s) => s.toUpperCase().replace(/(?:Z|[+-]\d{2}:\d{2})$/, ''))
  .pipe(z.iso.date())
  .meta({ pattern: '^\\d{4}-\\d{2}-\\d{2}(?:[Zz]|[+-]\\d{2}:\\d{2})?$' })

export const referenceSchema = z.object({ $ref: z.string().min(1).max(512).describe('The $id of the referenced data component') }).meta({ id: 'EidoReference' })

/** The prologue every data component carries. Inbound, only `$id` is required on components. */
const prologueIn = {
  $id: z.string().min(1).max(512),
  lastUpdateTimeStamp: instant.optional(),
  updatedByAgencyReference: referenceSchema.optional(),
}

const prologueOut = {
  $id: z.string().min(1),
  lastUpdateTimeStamp: instant,
  updatedByAgencyReference: referenceSchema,
}

const refs = z.array(referenceSchema)
const severity = z.enum(['highest', 'high', 'normal', 'low', 'lowest'])

/** NIEM nc:PersonType, only the elements the service maps. Their lengths are checked where read (the caller and the subject). */
const ncPersonIn = z.looseObject({
  PersonName: z
    .looseObject({
      PersonFullName: z.string().optional().describe('Of the caller and the subject: at most 200 characters'),
      PersonGivenName: z.string().optional().describe('Of the caller and the subject when there is no full name: at most 100 characters, as are the middle name and surname'),
      PersonMiddleName: z.string().optional(),
      PersonSurName: z.string().optional(),
    })
    .optional(),
  // NIEM's date is a choice: a Date or a DateTime (either read as the birth date) or a coarser form.
  PersonBirthDate: z.looseObject({ Date: NIEM_DATE.optional().describe('An xs:date; a time zone is dropped'), DateTime: NIEM_DATE_TIME.optional() }).optional(),
  PersonOtherIdentification: z
    .array(z.looseObject({ IdentificationID: z.string().describe('The subject’s CountyPersonId: 1 to 64 characters'), IdentificationCategoryText: z.string().optional() }))
    .optional(),
})

export const agencyIn = z.looseObject({
  ...prologueIn,
  agencyRoleDescriptionRegistryText: z.array(z.string()),
  agencyType: z.array(z.string()),
  incidentOwningAgencyIndicator: z.boolean().optional(),
})

export const dispositionIn = z.looseObject({
  ...prologueIn,
  // An APCO code, or urn:cad-router:disposition: and a disposition (at most 64): see vocabulary.ts;
  // checked on the one disposition read, the call's.
  dispositionCommonRegistryCode: z.string().describe('The call’s: an APCO code or urn:cad-router:disposition: and a disposition (at most 64 characters)'),
  dispositionPrimaryIndicator: z.boolean().optional(),
  dispositionCategoryText: z.string().optional(),
  dispositionDescriptionText: z.string().optional(),
})

export const incidentIn = z.looseObject({
  ...prologueIn,
  incidentTypeCommonRegistryText: z
    .string()
    .min(1)
    .max(OWN_NATURE_CODE_PREFIX.length + 32)
    .regex(
      // An APCO code (APCO_INCIDENT_TYPE), or the URN and any nature code the native contract takes.
      new RegExp(`^(?:[A-Z0-9]+|${OWN_NATURE_CODE_PREFIX}[\\s\\S]+)$`),
      `an APCO ANS 2.103 incident type code, e.g. EDP, or ${OWN_NATURE_CODE_PREFIX} and a nature code (as cad-router writes a code the rule set does not list)`,
    ),
  incidentTypeInternalCode: z.string().optional(),
  incidentStatusCommonRegistryText: z.array(z.string()).optional(),
  incidentCommonPriorityNumber: z.number().int().min(1).max(5).optional(),
  locationReference: refs.optional(),
  personReference: refs.optional(),
  notesReference: refs.optional(),
  dispositionComponent: z.array(dispositionIn).optional(),
})

export const callIn = z.looseObject({
  ...prologueIn,
  priorityIdentifier: severity.optional(),
  callBackReference: referenceSchema.optional(),
  locationReference: refs.optional(),
  personReference: refs.optional(),
  notesReference: refs.optional(),
})

export const callbackIn = z.looseObject({
  ...prologueIn,
  callBackInformationUri: z.array(z.string()).optional(),
})

export const locationIn = z.looseObject({
  ...prologueIn,
  locationTypeDescriptionRegistryText: z.string(),
  locationByValue: z.string().optional().describe('PIDF-LO; in the location the call takes, at most 16,000 characters'),
  locationDescriptionText: z.string().optional().describe('Read when the location has no civic address: then at most 500 characters'),
})

export const personIn = z.looseObject({
  ...prologueIn,
  // NENA allows an empty list: such a person is neither caller nor subject.
  personIncidentRoleRegistryText: z.array(z.string()),
  ncPersonComponent: ncPersonIn.optional(),
  callBackReference: referenceSchema.optional(),
})

export const notesIn = z.looseObject({
  ...prologueIn,
  notesActionComments: z.string().describe('HTML; in a note the call takes, at most 64 KiB'),
})

export const cautionIn = z.looseObject({
  ...prologueIn,
  cautionTypeInternalText: z.string(),
  cautionTypeCommonRegistryText: z.string(),
  cautionTypeCommonSubRegistryText: z.array(z.string()).optional(),
  cautionSeverity: severity,
})

export const additionalDataIn = z.looseObject({
  ...prologueIn,
  additionalDataByValue: z.string().optional().describe('Read only in the routing facts (urn:cad-router:routing-facts): JSON, at most 16,000 characters'),
  urlPurpose: z.string().optional(),
})

/** An EIDO as POST /v1/eido accepts it. */
export const eidoInSchema = z
  .looseObject({
    $id: z.string().min(1).max(CALL_ID_MAX_LENGTH).describe('The incident tracking identifier: becomes the callId'),
    lastUpdateTimeStamp: instant.describe('With $id, the idempotency key of this document'),
    updatedByAgencyReference: referenceSchema,
    eidoVersion: z.literal('1.0'),
    issuingElementIdentification: z.string().min(1),
    agencyComponent: z.array(agencyIn).min(1),
    // Optional in NENA; without it the call cannot be routed, and the mapping says so by name.
    incidentComponent: incidentIn.optional(),
    callComponent: z.array(callIn).optional(),
    callbackComponent: z.array(callbackIn).optional(),
    locationComponent: z.array(locationIn).optional(),
    personComponent: z.array(personIn).optional(),
    notesComponent: z.array(notesIn).optional(),
    cautionComponent: z.array(cautionIn).optional(),
    additionalDataComponent: z.array(additionalDataIn).optional(),
  })
  .describe('A NENA EIDO (EmergencyIncidentDataObjectType). Components the service does not read are accepted and ignored.')
  .meta({ id: 'EidoIn' })

export type EidoIn = z.infer<typeof eidoInSchema>

// ---- outbound ----

const agencyOut = z.object({
  ...prologueOut,
  agencyRoleDescriptionRegistryText: z.array(z.string()),
  agencyType: z.array(z.string()),
  incidentOwningAgencyIndicator: z.boolean().optional(),
})

const agentOut = z.object({
  ...prologueOut,
  agentRoleRegistryText: z.array(z.string()).min(1),
  agencyReference: referenceSchema,
})

const dispositionOut = z.object({
  ...prologueOut,
  dispositionCommonRegistryCode: z.string(),
  dispositionPrimaryIndicator: z.boolean(),
  dispositionDescriptionText: z.string().optional(),
})

const incidentOut = z.object({
  ...prologueOut,
  incidentTypeCommonRegistryText: z.string().describe(`The APCO code the call routes on, else ${OWN_NATURE_CODE_PREFIX} and the call's nature code`),
  incidentTypeInternalCode: z.string().optional().describe('The call’s nature code, when it is the agency’s own or unknown'),
  incidentStatusCommonRegistryText: z.array(z.string()),
  incidentCommonPriorityNumber: z.number().int(),
  locationReference: refs.optional(),
  personReference: refs.optional(),
  notesReference: refs.optional(),
  dispositionComponent: z.array(dispositionOut).optional(),
})

const locationOut = z.object({
  ...prologueOut,
  locationTypeDescriptionRegistryText: z.string(),
  locationByValue: z.string().optional(),
  locationDescriptionText: z.string().optional(),
})

const personOut = z.object({
  ...prologueOut,
  personIncidentRoleRegistryText: z.array(z.string()).min(1),
  ncPersonComponent: z
    .object({
      PersonName: z.object({ PersonFullName: z.string() }).optional(),
      PersonBirthDate: z.object({ Date: z.string() }).optional(),
      PersonOtherIdentification: z.array(z.object({ IdentificationID: z.string(), IdentificationCategoryText: z.string() })).optional(),
    })
    .optional(),
  callBackReference: referenceSchema.optional(),
})

const callbackOut = z.object({ ...prologueOut, callBackInformationUri: z.array(z.string()) })

const notesOut = z.object({ ...prologueOut, notesActionComments: z.string() })

const cautionOut = z.object({
  ...prologueOut,
  cautionTypeInternalText: z.string(),
  cautionTypeCommonRegistryText: z.string(),
  cautionSeverity: severity,
})

const additionalDataOut = z.object({ ...prologueOut, additionalDataByValue: z.string(), urlPurpose: z.string() })

export const UNIT_STATUSES = ['Assigned', 'AcknowledgedTransmission', 'Dispatched', 'Cleared', 'AssignmentCancelled'] as const

const emergencyResourceOut = z.object({
  ...prologueOut,
  emergencyResourceTypeCommonRegistryText: z.string(),
  resourceAttributeRegistryText: z.array(z.string()),
  emergencyResourceName: z.string(),
  primaryUnitStatusRegistryText: z.enum(UNIT_STATUSES),
  secondaryUnitStatusRegistryText: z.array(z.string()),
  unitStatusInternal: z.array(z.string()),
  agentReference: refs.min(1),
})

const dispatchOut = z.object({
  ...prologueOut,
  agencyReference: referenceSchema,
  agentReference: referenceSchema,
  emergencyResourceReference: refs,
  notesReference: refs.optional(),
})

/** The call as GET /v1/calls/{callId}/eido returns it. */
export const eidoOutSchema = z
  .object({
    ...prologueOut,
    eidoVersion: z.literal('1.0'),
    issuingElementIdentification: z.string(),
    agencyComponent: z.array(agencyOut).min(1),
    agentComponent: z.array(agentOut),
    incidentComponent: incidentOut,
    locationComponent: z.array(locationOut).optional(),
    personComponent: z.array(personOut).optional(),
    callbackComponent: z.array(callbackOut).optional(),
    notesComponent: z.array(notesOut).optional(),
    cautionComponent: z.array(cautionOut).optional(),
    additionalDataComponent: z.array(additionalDataOut),
    emergencyResourceComponent: z.array(emergencyResourceOut),
    dispatchComponent: z.array(dispatchOut),
  })
  .strict()
  .describe('The call as a NENA EIDO, with the routing result as emergency resources, unit statuses and dispositions')
  .meta({ id: 'EidoOut' })

export type EidoOut = z.infer<typeof eidoOutSchema>
