/** The routing engine's public API. */
export * from './types.js'
export {
  ruleSetSchema,
  conditionSchema,
  parseRuleSet,
  formatIssues,
  RuleSetError,
  DAYS,
  DEFAULT_TIME_ZONE,
  ROUTE_PRIMARY,
  type RuleSet,
  type Condition,
  type Day,
} from './rule-set.js'
export { compileRuleSet } from './engine.js'
export { OUTSIDE_CRU_HOURS, cruAvailability, cruCapacity, cruTeamKey, localTime, describeDays, type CruAvailability, type CruCapacity } from './availability.js'
export { loadDefaultRuleSet } from './default-rule-set.js'
export {
  verifyRuleSet,
  verifyRuleSetAsync,
  formatReport,
  formatReportWithCoverage,
  FINDING_KINDS,
  SAFETY_FLAGS,
  MEDICAL_FLAGS,
  type Finding,
  type FindingKind,
  type VerificationReport,
  type RouteCoverage,
  type CoverageRule,
} from './verify.js'
