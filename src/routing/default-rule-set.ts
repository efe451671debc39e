/** The shipped Dakota County rule set (rules/default.json), validated on load. */
import doc from '../../rules/default.json' with { type: 'json' }
import { parseRuleSet, type RuleSet } from './rule-set.js'

export function loadDefaultRuleSet(): RuleSet {
  // Parsing returns a fresh copy, so callers cannot alter the imported module's object.
  return parseRuleSet(doc)
}
