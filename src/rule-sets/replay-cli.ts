/**
 * npm run replay -- --rules <file|version> (--calls <file.jsonl> | --from <iso> --to <iso>) [--against <file|version>] [--json] [--changes N]
 *
 * Decides calls again with a rule set and reports the route mix, the capture rate, the projected
 * diversion and — with --against — the calls whose route changes, by nature code.
 *
 * --rules/--against: a rule-set JSON file, or a stored version number (read from DATABASE_URL).
 * --calls: one JSON object per line, either
 *   {"callId": "…", "facts": {…}}   the facts stored with a decision (GET /v1/calls/{id} shows them): replayed as they are;
 *   a call event {"eventId", "type", "occurredAt", "call", "history"?}: facts built at occurredAt, CRU from each rule set's schedule,
 *     history from "history" (default: no prior calls, no case manager).
 * --from/--to instead of --calls: the calls stored in DATABASE_URL first seen in that range (as POST /v1/rule-sets/{version}/replay).
 *
 * A command-line tool: it prints to stdout on purpose. It writes nothing anywhere.
 */
import { ConfigError, loadConfig } from '../config.js'
import { runReplayCommand, UsageError } from './replay-command.js'

try {
  await runReplayCommand(process.argv.slice(2), (s) => process.stdout.write(s), () => loadConfig().DATABASE_URL)
} catch (err) {
  const usage = err instanceof UsageError || err instanceof ConfigError
  process.stderr.write(`${usage ? err.message : String(err)}\n`)
  process.exitCode = usage ? 2 : 1
}
