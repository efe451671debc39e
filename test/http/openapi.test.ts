import { readFile } from 'node:fs/promises'
import t from 'tap'
import { generateOpenApi } from '../../scripts/openapi-document.js'

t.test('the committed openapi/openapi.json is what the code generates (npm run openapi)', async (t) => {
  const committed = await readFile(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')
  const generated = await generateOpenApi()
  t.ok(committed === generated, 'openapi/openapi.json is stale: run `npm run openapi` and commit the result')
})

t.test('every schema reference resolves, and every component schema is used by an operation', async (t) => {
  const doc = JSON.parse(await generateOpenApi()) as { paths: object; components: { schemas: Record<string, unknown> } }
  const refs = new Set<string>()
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk)
    if (!node || typeof node !== 'object') return
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) refs.add(v.slice('#/components/schemas/'.length))
      else walk(v)
    }
  }
  walk(doc.paths)
  walk(doc.components.schemas)
  t.same([...refs].filter((r) => !(r in doc.components.schemas)), [], 'no reference to a schema the document lacks')
  t.same(Object.keys(doc.components.schemas).filter((n) => !refs.has(n)), [], 'no component schema that nothing uses (a generated client would get a type nothing sends or receives)')
  t.ok('CallEventInput' in doc.components.schemas, 'the call event as CAD posts it is there')
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
    t.ok(op.responses['429'], `${m} ${path} documents the rate limit`)
    // Query parameters an operation does not take are refused on every /v1 route (app.ts), also
    // where nothing else is validated: GET /v1/keys?agency=x is a 400 a generated client must expect.
    t.ok(op.responses['400'], `${m} ${path} documents 400 (an unknown query parameter)`)
  }
})

t.test('errors are documented as application/problem+json, with the ones Fastify answers for a body', async (t) => {
  type Op = { requestBody?: unknown; responses: Record<string, { content?: Record<string, unknown> }> }
  const doc = JSON.parse(await generateOpenApi()) as { paths: Record<string, Record<string, Op>> }
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([m, op]) => ({ name: `${m} ${path}`, op })))
  const errors = ops.flatMap(({ name, op }) => Object.entries(op.responses).filter(([s]) => Number(s) >= 400).map(([s, r]) => ({ name: `${name} ${s}`, types: Object.keys(r.content ?? {}) })))
  t.ok(errors.length > 100)
  t.same(errors.filter((e) => e.types.join() !== 'application/problem+json'), [], 'every error response is application/problem+json only')
  const withBody = ops.filter(({ op }) => op.requestBody)
  t.ok(withBody.length >= 10)
  for (const { name, op } of withBody) t.ok(['400', '413', '415'].every((s) => op.responses[s]), `${name} documents 400, 413 and 415`)
  // The router answers 414 for a path parameter past maxParamLength, before any route schema.
  const withParams = ops.filter(({ name }) => name.includes('{'))
  t.ok(withParams.length >= 15)
  for (const { name, op } of withParams) t.ok(op.responses['414'], `${name} documents 414`)
  t.notOk(ops.some(({ name, op }) => !name.includes('{') && op.responses['414']), 'only operations with a path parameter document 414')
})

t.test('the summary report documents its CSV answer beside the JSON one', async (t) => {
  type Media = { schema: { type?: string; $ref?: string; properties?: object; examples?: unknown[] } }
  const doc = JSON.parse(await generateOpenApi()) as { paths: Record<string, Record<string, { responses: Record<string, { content: Record<string, Media> }> }>> }
  const ok = doc.paths['/v1/reports/summary']!.get!.responses['200']!.content
  t.same(Object.keys(ok), ['application/json', 'text/csv'])
  t.ok(ok['application/json']!.schema.properties, 'JSON: the summary object')
  t.equal(ok['text/csv']!.schema.type, 'string', 'CSV: text')
  const [example] = ok['text/csv']!.schema.examples ?? []
  t.match(example, /^agency,bucket_start,calls,.*\r\nall,all,\d/, 'CSV: an example with the header and a row')
})

t.test('each operation names the roles whose keys may call it, as the auth hook decides', async (t) => {
  const doc = JSON.parse(await generateOpenApi()) as { paths: Record<string, Record<string, { description?: string; 'x-roles'?: string[] }>> }
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([m, op]) => ({ id: `${m.toUpperCase()} ${path}`, op })))
  t.same(ops.filter((o) => !Array.isArray(o.op['x-roles'])).map((o) => o.id), [], 'every operation has x-roles')
  const roles = (id: string) => ops.find((o) => o.id === id)?.op['x-roles']
  t.same(roles('POST /v1/call-events'), ['cad', 'admin'])
  t.same(roles('GET /v1/calls/{callId}'), ['console', 'supervisor', 'admin'], 'a CAD key reads its decision from the POST answer only')
  t.same(roles('GET /v1/audit'), ['auditor', 'admin'])
  t.same(roles('GET /v1/admin/failed-jobs'), ['admin'], 'a route that says nothing is admin-only')
  t.same(roles('GET /readyz'), [])
  t.match(ops.find((o) => o.id === 'POST /v1/call-events')!.op.description, /API key roles: cad, admin\.$/)
})
