/**
 * A stored call → an EIDO document, with the routing result: one emergency resource per assignment
 * (its pool as registry type and attribute, its status as unit status), the decision as dispatch and
 * additional data, and dispositions with APCO codes where one fits.
 */
import type { z } from 'zod'
import type { AssignmentStatus } from '../assignments/state-machine.js'
import type { callViewSchema } from '../calls/schemas.js'
import { FLAG_NAMES, type FlagName } from '../routing/index.js'
import { writePidfLo, type PlainLocation } from './pidf-lo.js'
import type { EidoOut } from './schemas.js'
import {
  codeOfDisposition,
  COUNTY_PERSON_ID_CATEGORY,
  FLAG_CAUTIONS,
  incidentTypeOf,
  POOL_RESOURCES,
  ROUTING_FACTS_PURPOSE,
  UNIT_STATUS,
} from './vocabulary.js'

type CallView = z.infer<typeof callViewSchema>

export const ISSUING_ELEMENT = 'cad-router'
export const DECISION_PURPOSE = 'urn:cad-router:decision'

const SERIOUS: ReadonlySet<FlagName> = new Set(['weapons', 'violence', 'threatToOthers', 'crimeInProgress'])

/**
 * `routed` is what the rule set of the call's latest decision makes of its nature code
 * (CompiledRuleSet.natureCodeOf): the incident type is that APCO code. Without it the call's own
 * code is written under OWN_NATURE_CODE_PREFIX, which reads back as itself.
 */
export function callToEido(view: CallView, routed?: { code: string; known: boolean }): EidoOut {
  const id = view.callId
  const stamp = view.updatedAt
  const prologue = (suffix: string, at = stamp) => ({ $id: `${id}#${suffix}`, lastUpdateTimeStamp: at, updatedByAgencyReference: { $ref: view.agency } })
  const agentOf = (agency: string) => `${ISSUING_ELEMENT}@${agency}`
  const agentId = agentOf(view.agency)
  // The call's agency owns the incident. A call handed to another agency keeps its assignments
  // with the agency that took them: each resource names that agency (through its agent), not the
  // new owner, so a reader never credits one agency with another's unit.
  const agencies = [...new Set([view.agency, ...view.assignments.map((a) => a.agency)])]
  const latest = view.decisions.at(-1)

  const incidentType = incidentTypeOf(view.natureCode, routed)
  const location = view.location as PlainLocation | null
  const caller = view.caller as { phone?: string; name?: string } | null
  const subject = view.subject as { personId?: string; name?: string; birthDate?: string } | null

  const locationComponent: NonNullable<EidoOut['locationComponent']> = location
    ? [{ ...prologue('location'), locationTypeDescriptionRegistryText: 'Incident', locationByValue: writePidfLo(id, location), ...(location.address ? { locationDescriptionText: location.address } : {}) }]
    : []

  const callbackComponent: NonNullable<EidoOut['callbackComponent']> = caller?.phone ? [{ ...prologue('callback'), callBackInformationUri: [`tel:${caller.phone}`] }] : []
  const personComponent: NonNullable<EidoOut['personComponent']> = []
  if (caller) {
    personComponent.push({
      ...prologue('caller'),
      personIncidentRoleRegistryText: ['Caller'],
      ...(caller.name ? { ncPersonComponent: { PersonName: { PersonFullName: caller.name } } } : {}),
      ...(callbackComponent.length ? { callBackReference: { $ref: callbackComponent[0]!.$id } } : {}),
    })
  }
  if (subject) {
    personComponent.push({
      ...prologue('subject'),
      personIncidentRoleRegistryText: ['PersonOfInterest'],
      ncPersonComponent: {
        ...(subject.name ? { PersonName: { PersonFullName: subject.name } } : {}),
        ...(subject.birthDate ? { PersonBirthDate: { Date: subject.birthDate } } : {}),
        ...(subject.personId ? { PersonOtherIdentification: [{ IdentificationID: subject.personId, IdentificationCategoryText: COUNTY_PERSON_ID_CATEGORY }] } : {}),
      },
    })
  }

  const notesComponent: NonNullable<EidoOut['notesComponent']> = []
  if (view.description) notesComponent.push({ ...prologue('note-description'), notesActionComments: escapeHtml(view.description) })
  if (latest) notesComponent.push({ ...prologue('note-decision', latest.decidedAt), notesActionComments: escapeHtml(latest.explanation) })

  const raised = FLAG_NAMES.filter((f) => view.flags[f])
  const cautionComponent: NonNullable<EidoOut['cautionComponent']> = raised.map((f) => ({
    ...prologue(`caution-${f}`),
    cautionTypeInternalText: f,
    cautionTypeCommonRegistryText: FLAG_CAUTIONS[f],
    cautionSeverity: SERIOUS.has(f) ? 'high' : 'normal',
  }))

  const routingFacts = { flags: Object.fromEntries(raised.map((f) => [f, true])), ...(view.dispatcherOverride ? { dispatcherOverride: view.dispatcherOverride } : {}) }
  const additionalDataComponent: EidoOut['additionalDataComponent'] = [{ ...prologue('routing-facts'), urlPurpose: ROUTING_FACTS_PURPOSE, additionalDataByValue: JSON.stringify(routingFacts) }]
  if (latest) {
    const decision = { route: view.route, ruleSetVersion: latest.ruleSetVersion, ruleId: latest.ruleId, fallback: latest.fallback, override: latest.override, review: latest.review, decidedAt: latest.decidedAt }
    additionalDataComponent.push({ ...prologue('decision', latest.decidedAt), urlPurpose: DECISION_PURPOSE, additionalDataByValue: JSON.stringify(decision) })
  }

  const emergencyResourceComponent: EidoOut['emergencyResourceComponent'] = view.assignments.map((a) => {
    const pool = POOL_RESOURCES[a.queue]
    const at = a.transitions.at(-1)?.at ?? a.createdAt
    return {
      ...prologue(`resource-${a.id}`, at),
      emergencyResourceTypeCommonRegistryText: pool.type,
      resourceAttributeRegistryText: [pool.attribute],
      emergencyResourceName: `${pool.name} (${a.role})`,
      primaryUnitStatusRegistryText: UNIT_STATUS[a.status as AssignmentStatus],
      secondaryUnitStatusRegistryText: [],
      // The service's own words, for a reader that wants more than the registry can say.
      unitStatusInternal: [`status:${a.status}`, `role:${a.role}`, `queue:${a.queue}`, ...(a.dueAt ? [`due:${a.dueAt}`] : [])],
      agentReference: [{ $ref: agentOf(a.agency) }],
    }
  })

  // The call's own disposition is the primary one, whatever it is: left out, a reader would take an
  // assignment's for the call's. Each assignment's follows, marked not primary.
  const dispositionComponent: NonNullable<EidoOut['incidentComponent']['dispositionComponent']> = []
  if (view.disposition) {
    dispositionComponent.push({ ...prologue('disposition'), dispositionCommonRegistryCode: codeOfDisposition(view.disposition), dispositionPrimaryIndicator: true, dispositionDescriptionText: view.disposition })
  }
  for (const a of view.assignments) {
    if (a.disposition) {
      dispositionComponent.push({
        ...prologue(`disposition-${a.id}`),
        dispositionCommonRegistryCode: codeOfDisposition(a.disposition),
        dispositionPrimaryIndicator: false,
        dispositionDescriptionText: `${a.queue} (${a.role}): ${a.disposition}`,
      })
    }
  }

  const refsTo = (list: { $id: string }[]) => list.map((c) => ({ $ref: c.$id }))
  const descriptionNote = notesComponent.filter((n) => n.$id.endsWith('#note-description'))
  const decisionNote = notesComponent.filter((n) => n.$id.endsWith('#note-decision'))

  return {
    $id: id,
    lastUpdateTimeStamp: stamp,
    updatedByAgencyReference: { $ref: view.agency },
    eidoVersion: '1.0',
    issuingElementIdentification: ISSUING_ELEMENT,
    agencyComponent: agencies.map((agency) => ({
      $id: agency,
      lastUpdateTimeStamp: stamp,
      updatedByAgencyReference: { $ref: view.agency },
      agencyRoleDescriptionRegistryText: ['Dispatching'],
      agencyType: ['police'],
      incidentOwningAgencyIndicator: agency === view.agency,
    })),
    agentComponent: agencies.map((agency) => ({ $id: agentOf(agency), lastUpdateTimeStamp: stamp, updatedByAgencyReference: { $ref: view.agency }, agentRoleRegistryText: ['Dispatching'], agencyReference: { $ref: agency } })),
    incidentComponent: {
      ...prologue('incident'),
      incidentTypeCommonRegistryText: incidentType.common,
      ...(incidentType.internal !== undefined ? { incidentTypeInternalCode: incidentType.internal } : {}),
      incidentStatusCommonRegistryText: [view.status === 'closed' ? 'Closed' : 'Active'],
      incidentCommonPriorityNumber: view.priority,
      ...(locationComponent.length ? { locationReference: refsTo(locationComponent) } : {}),
      ...(personComponent.length ? { personReference: refsTo(personComponent) } : {}),
      // Always present, even empty: a reader falls back to every note only when the incident names none.
      notesReference: refsTo(descriptionNote),
      ...(dispositionComponent.length ? { dispositionComponent } : {}),
    },
    ...(locationComponent.length ? { locationComponent } : {}),
    ...(personComponent.length ? { personComponent } : {}),
    ...(callbackComponent.length ? { callbackComponent } : {}),
    ...(notesComponent.length ? { notesComponent } : {}),
    ...(cautionComponent.length ? { cautionComponent } : {}),
    additionalDataComponent,
    emergencyResourceComponent,
    dispatchComponent: [
      {
        ...prologue('dispatch', latest?.decidedAt ?? stamp),
        agencyReference: { $ref: view.agency },
        agentReference: { $ref: agentId },
        emergencyResourceReference: refsTo(emergencyResourceComponent),
        ...(decisionNote.length ? { notesReference: refsTo(decisionNote) } : {}),
      },
    ],
  }
}

/** notesActionComments is HTML: the service's plain text is escaped, not interpreted. */
const escapeHtml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
