import type { Executor } from '../db/connect.js'

export interface CaseLink {
  personId: string
  caseManager: string
  active: boolean
  updatedAt: string
}

const toLink = (r: { person_id: string; case_manager: string; active: boolean; updated_at: Date }): CaseLink => ({
  personId: r.person_id,
  caseManager: r.case_manager,
  active: r.active,
  updatedAt: r.updated_at.toISOString(),
})

export async function findCaseLink(db: Executor, personId: string): Promise<CaseLink | undefined> {
  const row = await db.selectFrom('case_links').selectAll().where('person_id', '=', personId).executeTakeFirst()
  return row ? toLink(row) : undefined
}

/** Creates or replaces the link; `created` tells which. */
export async function putCaseLink(db: Executor, link: { personId: string; caseManager: string; active: boolean }, now: Date): Promise<{ created: boolean; link: CaseLink }> {
  const row = await db
    .insertInto('case_links')
    .values({ person_id: link.personId, case_manager: link.caseManager, active: link.active, updated_at: now })
    .onConflict((oc) => oc.column('person_id').doUpdateSet({ case_manager: link.caseManager, active: link.active, updated_at: now }))
    // xmax is 0 for a freshly inserted row and the updating transaction's id for an upsert's update.
    .returning(['person_id', 'case_manager', 'active', 'updated_at', (eb) => eb.fn<string>('text', [eb.ref('xmax' as 'person_id')]).as('xmax')])
    .executeTakeFirstOrThrow()
  return { created: row.xmax === '0', link: toLink(row) }
}

export async function deleteCaseLink(db: Executor, personId: string): Promise<boolean> {
  const r = await db.deleteFrom('case_links').where('person_id', '=', personId).executeTakeFirst()
  return Number(r.numDeletedRows) > 0
}
