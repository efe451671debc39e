import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { chromium, type Browser } from 'playwright-core'
import t from 'tap'
import { createWorld, say } from '../helpers/world.js'
import { seedReportWorld } from '../reports/fixture.js'

// Debian's chromium (.ci/run installs it); no browser download, nothing from the network.
const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

// Before the world: a browser that cannot start fails the file before a database exists to leave behind.
const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 })
t.teardown(() => browser.close())

const world = await createWorld(t)
// The fixture's day 0 is a UTC midnight 20 days ago, so the page's default "last 30 days" covers it.
const today = new Date()
const t0 = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - 20))
await seedReportWorld(world.db, t0)
await world.app.listen({ port: 0, host: '127.0.0.1' })
const address = world.app.server.address()
if (!address || typeof address === 'string') throw new Error('no port')
const base = `http://127.0.0.1:${address.port}`
const supervisorKey = await world.key('supervisor')
const auth = { headers: { authorization: `Bearer ${supervisorKey}` } }

/**
 * Polls an expression in the page. (Playwright's waitForFunction evaluates with eval, which the
 * service's Content-Security-Policy rightly forbids.)
 */
async function waitInPage(page: import('playwright-core').Page, expr: string, ms = 30_000): Promise<void> {
  const until = performance.now() + ms
  while (!(await page.evaluate(expr))) {
    if (performance.now() > until) throw new Error(`not true within ${ms} ms: ${expr}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const pct = (v: number | null) => (v === null ? '–' : `${(v * 100).toFixed(1)}%`)

t.test('the dashboard shows the figures the reports API gives, and reads well', async (t) => {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } })
  const foreign: string[] = []
  const failed: string[] = []
  page.on('request', (req) => {
    if (!req.url().startsWith(base)) foreign.push(req.url())
  })
  page.on('response', (res) => {
    if (res.status() >= 400) failed.push(`${res.status()} ${res.url()}`)
  })
  page.on('pageerror', (err) => failed.push(`page error: ${err.message}`))

  const served = await page.goto(`${base}/dashboard`)
  t.equal(new URL(page.url()).pathname, '/dashboard/', 'redirected to the directory')
  // Browsers exempt localhost, so this page loads either way; on a server's name or address a
  // browser told to upgrade asks the plain-HTTP service for https and gets a blank page.
  t.notMatch(served?.headers()['content-security-policy'], /upgrade-insecure-requests/, 'no upgrade to https of a service that speaks plain HTTP')
  // No key yet: the page asks for one (the static files are open, the figures are not).
  await page.waitForSelector('#key-form:not([hidden])', { timeout: 30_000 })
  t.match(await page.textContent('#status'), /supervisor API key/)
  t.equal(await page.evaluate('document.activeElement?.id'), 'key', 'the key field has the focus')
  await page.keyboard.type(supervisorKey)
  await page.keyboard.press('Enter')
  await page.waitForSelector('body[data-query]', { timeout: 30_000 })
  const query = await page.getAttribute('body', 'data-query')
  const summary = (await (await fetch(`${base}/v1/reports/summary?${query}`, auth)).json()) as {
    overall: { diversion: { rate: number | null }; capture: { rate: number | null; toPolice: Record<string, number> }; coResponseShare: number | null; cruPhoneResolution: { share: number | null }; escalations: { total: number }; routeMix: Record<string, number>; calls: number }
    byAgency: Array<{ agency: string; diversion: { rate: number | null }; capture: { rate: number | null } }>
  }
  const queues = (await (await fetch(`${base}/v1/reports/queues`, auth)).json()) as { queues: Array<{ queue: string; waiting: number }>; overdueFollowUps: { total: number } }
  const o = summary.overall
  t.ok(o.calls >= 8, `the seeded calls are in the page's range (${o.calls})`)

  const text = (sel: string) => page.locator(sel).innerText()
  t.equal(await text('[data-metric="diversion-rate"]'), pct(o.diversion.rate))
  t.equal(await text('[data-metric="capture-rate"]'), pct(o.capture.rate))
  t.equal(await text('[data-metric="co-response-share"]'), pct(o.coResponseShare))
  t.equal(await text('[data-metric="cru-phone-share"]'), pct(o.cruPhoneResolution.share))
  t.equal(await text('[data-metric="escalations"]'), String(o.escalations.total))
  t.equal(await text('[data-metric="follow-ups-overdue"]'), String(queues.overdueFollowUps.total))
  t.equal(Number(await page.getAttribute('[data-metric="diversion-rate"]', 'data-value')), o.diversion.rate, 'the raw value too')
  for (const [route, n] of Object.entries(o.routeMix)) t.equal(await text(`[data-key="route-${route}"]`), String(n), `route mix: ${route}`)
  for (const [reason, n] of Object.entries(o.capture.toPolice)) t.equal(await text(`[data-key="to-police-${reason}"]`), String(n), `to police: ${reason}`)
  for (const q of queues.queues) t.equal(await text(`[data-key="queue-${q.queue}-waiting"]`), String(q.waiting), `queue ${q.queue} waiting`)
  for (const a of summary.byAgency) {
    t.equal(await text(`[data-key="agency-${a.agency}-diversion"]`), pct(a.diversion.rate), `${a.agency} diversion`)
    t.equal(await text(`[data-key="agency-${a.agency}-capture"]`), pct(a.capture.rate), `${a.agency} capture`)
  }
  t.equal(await page.locator('#trend canvas').count() > 0, true, 'the chart is drawn')
  // The county's days, the active rule set's zone: a call at 21:00 in Hastings is on that day.
  t.equal(new URLSearchParams(query!).get('timeZone'), 'America/Chicago', 'the report asked in the rule set’s zone')
  const chicagoDate = (iso: string) => new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Chicago', year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(iso))
  // (textContent: the table is in a closed <details>, where innerText is empty.)
  const rows = await page.locator('#series-table tbody tr > :first-child').allTextContents()
  t.same(rows, (summary as unknown as { series: Array<{ bucketStart: string }> }).series.map((c) => chicagoDate(c.bucketStart)), 'each day labelled with its Chicago date')

  // (Browser-side code is passed as strings: the project's TypeScript has no DOM types.)
  // Keyboard: the first Tab reaches the skip link; "p" pauses the live refresh, "p" again resumes it.
  // A fresh load (the key stays for the tab's session), so focus starts at the top of the page.
  await page.reload()
  await page.waitForSelector('body[data-query]', { timeout: 30_000 })
  t.equal(await page.isHidden('#key-form'), true, 'the key is remembered for this tab')
  await page.keyboard.press('Tab')
  t.equal(await page.evaluate('document.activeElement?.className'), 'skip')
  await page.keyboard.press('Enter')
  await page.keyboard.press('p')
  t.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true')
  await page.keyboard.press('p')
  t.equal(await page.getAttribute('#pause', 'aria-pressed'), 'false')
  // Choosing an agency with the keyboard narrows the figures to it.
  await page.focus('#agency')
  await page.selectOption('#agency', 'rosemount-pd')
  await waitInPage(page, "document.body.dataset.query?.includes('agency=rosemount-pd')")
  const only = (await (await fetch(`${base}/v1/reports/summary?${await page.getAttribute('body', 'data-query')}`, auth)).json()) as typeof summary
  t.equal(await text('[data-metric="capture-rate"]'), pct(only.overall.capture.rate), 'agency view matches the API')
  await page.selectOption('#agency', '')
  await waitInPage(page, "!document.body.dataset.query?.includes('agency=')")

  t.same(foreign, [], 'nothing loaded from outside the service')
  t.same(failed, [], 'no failed requests or page errors')
  const dir = mkdtempSync(join(tmpdir(), 'cad-router-dashboard-'))
  const file = join(dir, 'dashboard.png')
  await page.screenshot({ path: file, fullPage: true })
  say(`screenshot: ${file}`)
  await page.close()
})

t.test('a refresh that answers after a later one does not show its figures', async (t) => {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } })
  t.teardown(() => page.close())
  await page.goto(`${base}/dashboard/`)
  await page.waitForSelector('#key-form:not([hidden])', { timeout: 30_000 })
  await page.keyboard.type(supervisorKey)
  await page.keyboard.press('Enter')
  await page.waitForSelector('body[data-query]', { timeout: 30_000 })
  // The figures for every agency are held on their way back, until the page has shown one agency's.
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  let held = 0
  await page.route('**/v1/reports/summary?*', async (route) => {
    if (!route.request().url().includes('agency=')) {
      held++
      await released
    }
    await route.continue()
  })
  await page.evaluate("document.querySelector('#refresh').click()")
  const until = performance.now() + 30_000
  while (held === 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
  t.equal(held, 1, 'the refresh for every agency is on its way')
  await page.selectOption('#agency', 'rosemount-pd')
  await waitInPage(page, "document.body.dataset.query?.includes('agency=rosemount-pd')")
  const only = (await (await fetch(`${base}/v1/reports/summary?${await page.getAttribute('body', 'data-query')}`, auth)).json()) as {
    overall: { capture: { rate: number | null } }
  }
  release()
  // The earlier refresh has answered: shown (the defect) or set aside.
  await waitInPage(page, "!document.body.dataset.query?.includes('agency=') || document.body.dataset.superseded === '1'")
  t.match(await page.getAttribute('body', 'data-query'), /agency=rosemount-pd/, 'the page still shows the agency chosen last')
  t.equal(await page.locator('[data-metric="capture-rate"]').innerText(), pct(only.overall.capture.rate), "with that agency's figures")
})
