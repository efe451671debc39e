import { readFile } from 'node:fs/promises'
import t from 'tap'
import { generateOpenApi } from '../../scripts/openapi-document.js'

t.test('the committed openapi/openapi.json is what the code generates (npm run openapi)', async (t) => {
  const committed = await readFile(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')
  const generated = await generateOpenApi()
  t.ok(committed === generated, 'openapi/openapi.json is stale: run `npm run openapi` and commit the result')
})

t.test('every operation has a summary, tags, an operationId and its error responses', async (t) => {
  const doc = JSON.parse(await generateOpenApi()) as { openapi: string; paths: Record<string, Record<string, { summary?: string; tags?: string[]; operationId?: string; responses: Record<string, unknown> }>> }
  t.equal(doc.openapi, '3.1.0')
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([m, op]) => ({ path, m, op })))
  const api = ops.filter((o) => o.path.startsWith('/v1/'))
  t.ok(api.length >= 7, 'the v1 operations are documented')
  for (const { path, m, op } of [...api, ...ops.filter((o) => o.path === '/healthz' || o.path === '/readyz')]) {
    t.ok(op.summary, `${m} ${path} has a summary`)
    t.ok(op.tags?.length, `${m} ${path} has tags`)
    t.ok(op.operationId, `${m} ${path} has an operationId`)
  }
  for (const { path, m, op } of api) {
    t.ok(Object.keys(op.responses).some((s) => s.startsWith('4')), `${m} ${path} documents its client errors`)
    t.ok(op.responses['503'], `${m} ${path} documents 503`)
  }
})
