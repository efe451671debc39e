/** The replay command behind `npm run replay` (src/rule-sets/replay-cli.ts), callable in-process by the tests. */
import { createReadStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { callEventSchema } from '../calls/schemas.js'
import { instant } from '../http/storable.js'
import { createDb, createPool, type Db } from '../db/connect.js'
import { compileRuleSet, RuleSetError, type CompiledRuleSet, type RoutingFacts, type RuleSet } from '../routing/index.js'
import { factsFor, factsSchema, historySchema, NO_HISTORY } from './facts.js'
import { createReplay, formatReplayReport, type ReplayItem } from './replay.js'
import { storedDecisions } from './replay-repository.js'

const USAGE = 'usage: npm run replay -- --rules <file|version> (--calls <file.jsonl> | --from <iso> --to <iso>) [--against <file|version>] [--json] [--changes N]'

/** A mistake in the arguments or inputs: the message says what; the CLI exits with 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

const storedLine = z.object({ callId: z.string().min(1).optional(), facts: factsSchema }).passthrough()
const eventLine = z.object({ history: historySchema.optional() }).passthrough()

function parseLine(text: string, n: number): ReplayItem {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new UsageError(`--calls line ${n}: not JSON`)
  }
  if (json !== null && typeof json === 'object' && 'facts' in json) {
    const r = storedLine.safeParse(json)
    if (!r.success) throw new UsageError(`--calls line ${n}: facts ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
    return { callId: r.data.callId ?? `line-${n}`, facts: r.data.facts as RoutingFacts }
  }
  const line = eventLine.safeParse(json)
  if (!line.success) throw new UsageError(`--calls line ${n}: ${line.error.issues.map((i) => `${i.path.join('.') || '(line)'}: ${i.message}`).join('; ')}`)
  const { history, ...event } = line.data
  const r = callEventSchema.safeParse(event)
  // Issue paths only: the values of a call event are personal data.
  if (!r.success) throw new UsageError(`--calls line ${n}: not stored facts nor a call event (${r.error.issues.map((i) => i.path.join('.') || '(line)').join(', ')})`)
  const e = r.data
  const at = new Date(e.occurredAt)
  return { callId: e.call.callId, facts: (rs: CompiledRuleSet) => factsFor(rs, { eventType: e.type, call: e.call, at, history: history ?? NO_HISTORY }) }
}

async function* fileItems(path: string): AsyncGenerator<ReplayItem> {
  const lines = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity })
  let n = 0
  for await (const line of lines) {
    n++
    if (line.trim() === '') continue
    yield parseLine(line, n)
  }
}

/** A range's end as the API takes it (RFC 3339 with an offset): not whatever `new Date` makes of it. */
function instantArg(value: string, flag: string): Date {
  const parsed = instant.safeParse(value)
  if (!parsed.success) throw new UsageError(`${flag}: ${parsed.error.issues[0]?.message ?? 'not a date-time'} (RFC 3339 with an offset, e.g. 2026-11-01T00:00:00Z)`)
  return new Date(parsed.data)
}

/** Runs the replay command; `databaseUrl` is only used when a version or a time range is asked for. */
export async function runReplayCommand(argv: string[], write: (s: string) => void, databaseUrl: () => string): Promise<void> {
  const options = {
    rules: { type: 'string' },
    against: { type: 'string' },
    calls: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    json: { type: 'boolean', default: false },
    changes: { type: 'string', default: '50' },
    help: { type: 'boolean', short: 'h', default: false },
  } as const
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof options }>>['values']
  try {
    values = parseArgs({ args: argv, options }).values
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`)
  }
  if (values.help) {
    write(`${USAGE}\n`)
    return
  }
  if (!values.rules) throw new UsageError(USAGE)
  // One source of calls: a file, or a whole range. A range beside a file, or half of one, is a mistake to name, not to ignore.
  const hasRange = values.from !== undefined || values.to !== undefined
  if (values.calls ? hasRange : !(values.from && values.to)) throw new UsageError(`give --calls, or --from and --to\n${USAGE}`)
  const range = values.from && values.to ? { from: instantArg(values.from, '--from'), to: instantArg(values.to, '--to') } : null
  if (range && range.from >= range.to) throw new UsageError('--from must be before --to')
  const changeLimit = Number(values.changes)
  if (!Number.isInteger(changeLimit) || changeLimit < 0) throw new UsageError('--changes takes a whole number')

  let db: Db | undefined
  const database = (): Db => {
    db ??= createDb(createPool({ connectionString: databaseUrl(), max: 2, statementTimeoutMs: 60_000, applicationName: 'cad-router-replay' }))
    return db
  }
  const load = async (arg: string, flag: string): Promise<CompiledRuleSet> => {
    let doc: unknown
    if (/^\d+$/.test(arg)) {
      const row = await database().selectFrom('rule_sets').select('document').where('version', '=', Number(arg)).executeTakeFirst()
      if (!row) throw new UsageError(`${flag}: no stored rule set version ${arg}`)
      doc = row.document
    } else {
      try {
        doc = JSON.parse(await readFile(arg, 'utf8'))
      } catch (err) {
        throw new UsageError(`${flag}: cannot read ${arg} as JSON (${(err as Error).message})`)
      }
    }
    try {
      return compileRuleSet(doc as RuleSet)
    } catch (err) {
      if (err instanceof RuleSetError) throw new UsageError(`${flag} ${arg} is not a valid rule set:\n  ${err.issues.join('\n  ')}`)
      throw err
    }
  }

  try {
    const candidate = await load(values.rules, '--rules')
    const against = values.against ? await load(values.against, '--against') : null
    const run = createReplay(candidate, against, { changeLimit })
    const items = values.calls
      ? fileItems(values.calls)
      : storedDecisions(database(), { ...range!, agencies: null })
    for await (const item of items) run.add(item)
    const report = run.report()
    write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReplayReport(report))
  } finally {
    await db?.destroy()
  }
}

