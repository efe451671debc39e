import { readFile } from 'node:fs/promises'

export interface Operation {
  path: string
  method: 'GET' | 'POST' | 'PUT' | 'DELETE'
}

type Doc = { paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>> }

/**
 * Every operation of the published contract, so routes added later are covered by the tests that
 * walk them, except streams (text/event-stream): `inject` waits for a response to end, and a stream
 * never does. The feed's own tests cover the stream over real HTTP.
 */
export async function documentedOperations(): Promise<Operation[]> {
  const doc = JSON.parse(await readFile(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as Doc
  return Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods)
      .filter(([, op]) => !op.responses?.['200']?.content?.['text/event-stream'])
      .map(([m]) => ({ path, method: m.toUpperCase() as Operation['method'] })),
  )
}
