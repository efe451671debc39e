import { readFileSync } from 'node:fs'
import semver from 'semver'
import t from 'tap'

interface Locked {
  version?: string
  dev?: boolean
  engines?: { node?: string } | string[]
}

const read = (file: string): unknown => JSON.parse(readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8'))

t.test('every package the service installs runs on the lowest Node that package.json promises', async (t) => {
  // A dependency that needs a newer Node may not even load on the older one: @fastify/static 10
  // requires content-disposition 3, ESM only (Node >= 22), which a Node 20 without require(esm)
  // (before 20.19) refuses, so the service did not start. npm ci only warns (EBADENGINE).
  const { engines } = read('package.json') as { engines: { node: string } }
  const lowest = semver.minVersion(engines.node)
  t.ok(lowest, `engines.node ${engines.node} has a lowest version`)
  const { packages } = read('package-lock.json') as { packages: Record<string, Locked> }
  const shipped = Object.entries(packages).filter(([path, p]) => path !== '' && !p.dev)
  t.ok(shipped.length > 100, `${shipped.length} packages installed without the dev dependencies`)
  const refused = shipped
    .map(([path, p]) => ({ name: path.replace(/^.*node_modules\//, ''), version: p.version, node: Array.isArray(p.engines) ? undefined : p.engines?.node }))
    .filter((p) => p.node !== undefined && !semver.satisfies(lowest!, p.node))
    .map((p) => `${p.name}@${p.version} needs Node ${p.node}`)
  t.same(refused, [], `each supports Node ${lowest}`)
})
