import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'

// tap ends a file's root test by itself once it sits idle after an assertion or a subtest, when a
// teardown is registered (createWorld registers one): "idle for 3 consecutive setTimeout
// deferrals" (@tapjs/core's TAP). A top-level await after the first top-level assertion or subtest
// can leave it idle that long; the subtests registered after it are then never run, tap prints
// "cannot create subtest after parent test ends", and the file still passes. key-cache.test.ts
// passed that way with 1 assertion of 163, when its LISTEN connection was slow to open.
// So: every top-level await comes before the file's first top-level assertion or subtest.

const TEST_ROOT = fileURLToPath(new URL('..', import.meta.url))

interface Statement {
  line: number
  lines: string[]
}

/** A top-level assertion or subtest (not t.teardown, t.setTimeout, t.before: they leave nothing to process). */
const ASSERTION = /^t\.(ok|notOk|equal|not|same|notSame|strictSame|match|notMatch|has|type|throws|doesNotThrow|rejects|resolves|resolveMatch|error|pass|fail|test)\(/

/** Top-level statements: each begins at a line that starts in column 0 and is not a closing bracket or a comment. */
function topLevelStatements(source: string): Statement[] {
  const out: Statement[] = []
  source.split('\n').forEach((text, i) => {
    if (/^[^\s}\])/*]/.test(text)) out.push({ line: i + 1, lines: [text] })
    else out.at(-1)?.lines.push(text)
  })
  return out
}

/** A loop or a condition at the top level: what its body does at one indent is done at the top level. */
const BLOCK = /^(for|if|while|do|try)\b/
const bodyLines = (s: Statement) => (BLOCK.test(s.lines[0]!) ? s.lines.slice(1).filter((l) => /^ {2}\S/.test(l)).map((l) => l.slice(2)) : [])

/** Whether the line awaits, not inside a function it defines. */
function awaitsOutsideFunctions(line: string): boolean {
  const at = line.search(/\bawait\b/)
  return at >= 0 && !/=>|\bfunction\b/.test(line.slice(0, at))
}

/** Whether the statement awaits at the top level, not inside a function it defines. */
function awaitsAtTop(s: Statement): boolean {
  const [first, second] = s.lines
  if (awaitsOutsideFunctions(first!) || bodyLines(s).some(awaitsOutsideFunctions)) return true
  // `t.ok(` or `const x = f(` whose first argument, on the next line, is awaited.
  return /\($/.test(first!) && second !== undefined && /^ {2}await\b/.test(second)
}

const assertsAtTop = (s: Statement) => ASSERTION.test(s.lines[0]!) || bodyLines(s).some((l) => ASSERTION.test(l))

/** The top-level awaits that come after the file's first top-level assertion or subtest. */
function awaitsAfterFirstAssertion(source: string): number[] {
  const found: number[] = []
  let tapSeen = false
  for (const s of topLevelStatements(source)) {
    if (tapSeen && awaitsAtTop(s)) found.push(s.line)
    if (assertsAtTop(s)) tapSeen = true
  }
  return found
}

t.test('the checker finds the forms that ended files early, and passes the usual one', async (t) => {
  const keyCacheBefore = "const world = await createWorld(t)\nt.equal(await status(B), 200)\nt.ok(\n  await eventually(async () => x(), 30_000),\n  'listens',\n)\nt.test('a', async (t) => {\n  await y()\n})\n"
  t.same(awaitsAfterFirstAssertion(keyCacheBefore), [3], 'an assertion whose argument awaits, after an assertion')
  const replayBefore = "t.test('pure', async (t) => {\n  t.ok(1)\n})\n\nconst world = await createWorld(t)\nawait store(world.db)\n"
  t.same(awaitsAfterFirstAssertion(replayBefore), [5, 6], 'awaits after a subtest')
  const usual = "const world = await createWorld(t)\nconst seeded = await post()\nt.equal(seeded.statusCode, 201)\nconst id = seeded.id\n\nt.test('a', async (t) => {\n  const r = await get(id)\n  t.equal(r, 1)\n})\n// await in a comment\nt.test('b', async (t) => { await z() })\n"
  t.same(awaitsAfterFirstAssertion(usual), [], 'awaits before the first assertion, and inside subtests')
  const loops = "for (const c of cases) {\n  t.test(c.name, async (t) => {\n    await run(c)\n  })\n}\nfor (const c of more) {\n  await store(c)\n}\n"
  t.same(awaitsAfterFirstAssertion(loops), [6], 'subtests made in a loop, then a loop that awaits')
})

t.test('no test file awaits at its top level after its first assertion or subtest', async (t) => {
  const files = readdirSync(TEST_ROOT, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.test.ts'))
  t.ok(files.length > 100, `${files.length} test files read`)
  const offenders = files.flatMap((f) => awaitsAfterFirstAssertion(readFileSync(`${TEST_ROOT}/${f}`, 'utf8')).map((line) => `test/${f}:${line}`))
  t.same(offenders, [], 'move each such await above the first top-level assertion or subtest, or into a subtest')
})
