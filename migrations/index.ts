import type { Migration } from 'kysely'
import * as m0001 from './0001_initial.js'
import * as m0004 from './0004_security.js'
import * as m0006 from './0006_reports.js'
import * as m0007 from './0007_rule_set_lifecycle.js'

/** Listed statically so the same code runs from TypeScript sources (tests) and from dist/ (production). */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0004_security': m0004,
  '0006_reports': m0006,
  '0007_rule_set_lifecycle': m0007,
}
