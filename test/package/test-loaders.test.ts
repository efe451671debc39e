import { createRequire } from 'node:module'
import t from 'tap'

// The loaders this very process got from tap. Tap reads its plugins' loaders before it rebuilds
// itself for a changed plugin list, so the first `tap` after `npm ci` gave every test process
// ts-node (the default TypeScript plugin) on top of tsx: each file compiled twice, about twice the
// CPU per file. `npm test` runs `tap build` first (.taprc says why).
t.test('test processes load TypeScript through tsx only, without the plugins .taprc removes', async (t) => {
  const args = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ')
  t.match(args, /--import=tsx/, 'tsx, from .taprc')
  // Failing right after `npm ci`: tap has not been built for .taprc yet (`npm test` does it).
  const rebuild = 'run `npx tap build` once after `npm ci` (npm test does), then tap again'
  t.notMatch(args, /@tapjs\/typescript/, `no ts-node loader (tap's default TypeScript plugin): ${rebuild}`)
  t.notMatch(args, /@tapjs\/mock/, `no module-mocking loader: ${rebuild}`)
  const loaded = Object.keys(createRequire(import.meta.url).cache)
  t.same(
    loaded.filter((f) => /[/\\](ts-node[^/\\]*|typescript)[/\\]/.test(f)),
    [],
    `neither ts-node nor the TypeScript compiler was loaded: ${rebuild}`,
  )
})
