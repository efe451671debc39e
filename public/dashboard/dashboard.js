// Supervisor dashboard: reads /v1/reports/summary and /v1/reports/queues and refreshes every 15 s.
// No framework and no build step; uPlot (served from node_modules) draws the one chart.
/* global uPlot */

const REFRESH_MS = 15_000
const $ = (sel) => document.querySelector(sel)
const state = { paused: false, timer: null, chart: null, agencies: new Set(), seq: 0 }

const pct = (v) => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(1)}%`)
const secs = (v) => {
  if (v === null || v === undefined) return '–'
  if (v < 120) return `${Math.round(v)} s`
  if (v < 7200) return `${Math.round(v / 60)} min`
  if (v < 172_800) return `${(v / 3600).toFixed(1)} h`
  return `${(v / 86_400).toFixed(1)} d`
}
const ROUTE_LABELS = { police: 'Police', cru: 'CRU', co_response: 'Co-response', ems: 'EMS', case_manager: 'Case manager' }
const QUEUE_LABELS = { police: 'Police', cru: 'CRU', ems: 'EMS', case_management: 'Case management', follow_up: 'Follow-up' }

function setMetric(name, text, raw) {
  const el = document.querySelector(`[data-metric="${name}"]`)
  el.textContent = text
  el.dataset.value = raw === null || raw === undefined ? '' : String(raw)
}
function setDetail(name, text) {
  document.querySelector(`[data-detail="${name}"]`).textContent = text
}
function fillRows(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement('tr')
      cells.forEach((c, i) => {
        const td = document.createElement(i === 0 ? 'th' : 'td')
        if (i === 0) td.scope = 'row'
        if (typeof c === 'object' && c !== null) {
          if (c.node) td.append(c.node)
          if (c.text !== undefined) td.append(c.text)
          if (c.key) td.dataset.key = c.key
          if (c.num) td.className = 'num'
        } else td.textContent = String(c)
        tr.append(td)
      })
      return tr
    }),
  )
}

function query(zone) {
  const days = Number($('#range').value)
  const to = new Date()
  const from = new Date(to.getTime() - days * 86_400_000)
  const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), bucket: $('#bucket').value, timeZone: zone })
  if ($('#agency').value) q.set('agency', $('#agency').value)
  return q
}

// The supervisor key lives in this tab's sessionStorage only: it is gone when the tab closes.
const KEY_ITEM = 'cad-router-key'
/** The headers of every read of the API, with the tab's key. */
const apiHeaders = (key) => ({ accept: 'application/json', authorization: `Bearer ${key}` })

/**
 * The county's days: the active rule set's time zone (CRU's hours are read in it too), so a call at
 * 21:00 in Hastings is on that day, not the next UTC one. Learnt once; UTC while it cannot be read
 * (a key limited to some agencies may not read rule sets: that is no reason to ask for another key).
 */
async function reportZone() {
  if (state.zone) return state.zone
  const headers = apiHeaders(sessionStorage.getItem(KEY_ITEM))
  try {
    const list = await fetch('/v1/rule-sets', { headers })
    const active = list.ok ? (await list.json()).activeVersion : null
    const one = active === null ? null : await fetch(`/v1/rule-sets/${active}`, { headers })
    const zone = one?.ok ? (await one.json()).document?.timeZone : undefined
    if (zone) state.zone = zone
  } catch {
    // UTC this time; asked again at the next refresh.
  }
  return state.zone ?? 'UTC'
}

/** YYYY-MM-DD of an instant, in the report's zone. */
const localDate = (iso, zone) => new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(iso))

function askForKey(message) {
  $('#key-form').hidden = false
  $('#status').textContent = message
  $('#key').focus()
}

async function getJson(url) {
  const key = sessionStorage.getItem(KEY_ITEM)
  if (!key) {
    askForKey('Enter a supervisor API key to see the figures.')
    throw new Error('no API key')
  }
  const res = await fetch(url, { headers: apiHeaders(key) })
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem(KEY_ITEM)
    askForKey(res.status === 401 ? 'That key is unknown, expired or revoked: enter a supervisor key.' : 'That key may not read reports: enter a supervisor key.')
    throw new Error(`${url.split('?')[0]} answered ${res.status}`)
  }
  if (!res.ok) throw new Error(`${url.split('?')[0]} answered ${res.status}`)
  $('#key-form').hidden = true
  return res.json()
}

$('#key-form').addEventListener('submit', (e) => {
  e.preventDefault()
  sessionStorage.setItem(KEY_ITEM, $('#key').value.trim())
  $('#key').value = ''
  $('#key').blur()
  $('#key-form').hidden = true
  void refresh()
})

function renderSummary(s) {
  const o = s.overall
  setMetric('diversion-rate', pct(o.diversion.rate), o.diversion.rate)
  setDetail('diversion', `${o.diversion.withoutPoliceFieldResponse} of ${o.diversion.closedMentalHealthCalls} closed mental-health calls without a police field response`)
  setMetric('capture-rate', pct(o.capture.rate), o.capture.rate)
  setDetail('capture', `${o.capture.captured} of ${o.capture.eligible} eligible calls to CRU or a case manager`)
  setMetric('co-response-share', pct(o.coResponseShare), o.coResponseShare)
  setDetail('calls', `${o.routeMix.co_response} of ${o.calls} calls`)
  setMetric('cru-phone-share', pct(o.cruPhoneResolution.share), o.cruPhoneResolution.share)
  setDetail('cru-phone', `${o.cruPhoneResolution.resolvedByPhone} of ${o.cruPhoneResolution.closedCruCalls} closed CRU calls`)
  setMetric('escalations', String(o.escalations.total), o.escalations.total)
  setDetail('follow-ups', `${o.followUps.completedOnTime} of ${o.followUps.created} created completed on time`)

  const max = Math.max(1, ...Object.values(o.routeMix))
  fillRows(
    $('#route-mix tbody'),
    Object.entries(o.routeMix).map(([route, n]) => {
      const bar = document.createElement('span')
      bar.className = 'bar'
      bar.style.width = `${(n / max) * 8}rem`
      bar.setAttribute('aria-hidden', 'true')
      return [ROUTE_LABELS[route] ?? route, { text: String(n), key: `route-${route}`, num: true }, { node: bar, text: o.calls ? pct(n / o.calls) : '–' }]
    }),
  )
  fillRows($('#to-police tbody'), [
    ['CRU unavailable (fallback)', { text: String(o.capture.toPolice.fallback), key: 'to-police-fallback', num: true }],
    ['Dispatcher override', { text: String(o.capture.toPolice.override), key: 'to-police-override', num: true }],
    ['Escalation', { text: String(o.capture.toPolice.escalation), key: 'to-police-escalation', num: true }],
  ])
  fillRows(
    $('#series-table tbody'),
    s.series.map((c) => [localDate(c.bucketStart, s.timeZone), c.calls, c.mentalHealthCalls, pct(c.diversion.rate), pct(c.capture.rate)]),
  )
  fillRows(
    $('#by-agency tbody'),
    s.byAgency.map((c) => [
      c.agency,
      { text: String(c.calls), num: true },
      { text: pct(c.diversion.rate), key: `agency-${c.agency}-diversion` },
      { text: pct(c.capture.rate), key: `agency-${c.agency}-capture` },
      pct(c.coResponseShare),
      `${c.followUps.completedOnTime} / ${c.followUps.created}`,
      { text: String(c.followUps.overdue), num: true },
      `${c.repeatCallers.subjects} ${c.repeatCallers.subjects === 1 ? 'subject' : 'subjects'} (≥ ${c.repeatCallers.threshold} calls in 30 days)`,
    ]),
  )
  // The agency list grows as agencies appear; the current choice is kept.
  for (const c of s.byAgency) {
    if (!state.agencies.has(c.agency)) {
      state.agencies.add(c.agency)
      $('#agency').append(new Option(c.agency, c.agency))
    }
  }
  renderChart(s)
  return o
}

function renderChart(s) {
  const xs = s.series.map((c) => Date.parse(c.bucketStart) / 1000)
  state.timeZone = s.timeZone
  const toPct = (v) => (v === null ? null : v * 100)
  const data = [xs, s.series.map((c) => toPct(c.diversion.rate)), s.series.map((c) => toPct(c.capture.rate))]
  const el = $('#trend')
  const width = Math.max(320, el.clientWidth)
  state.xs = xs
  if (state.chart) {
    state.chart.setData(data)
    state.chart.setSize({ width, height: 300 })
    return
  }
  const axis = { stroke: '#9da7b3', grid: { stroke: '#30363d' }, ticks: { stroke: '#30363d' }, font: '14px system-ui, sans-serif' }
  state.chart = new uPlot(
    {
      width,
      height: 300,
      scales: { y: { range: [0, 100] } },
      series: [
        {},
        { label: 'Diversion rate %', stroke: '#3fb950', width: 3, points: { size: 8 }, spanGaps: true },
        { label: 'Capture rate %', stroke: '#58a6ff', width: 3, points: { size: 8 }, spanGaps: true },
      ],
      // Ticks at the buckets themselves, labelled with their date in the report's zone.
      axes: [
        { ...axis, space: 60, splits: () => state.xs, values: (_u, ticks) => ticks.map((t) => localDate(new Date(t * 1000).toISOString(), state.timeZone).slice(5)) },
        { ...axis, size: 64, values: (_u, ticks) => ticks.map((t) => `${t}%`) },
      ],
    },
    data,
    el,
  )
}

function renderQueues(q, summary) {
  fillRows(
    $('#queues tbody'),
    q.queues.map((row) => {
      const ack = summary?.overall.timeToAcknowledge[row.queue]
      return [
        QUEUE_LABELS[row.queue] ?? row.queue,
        { text: String(row.waiting), key: `queue-${row.queue}-waiting`, num: true },
        { text: secs(row.oldestAgeSeconds), key: `queue-${row.queue}-age`, num: true },
        { text: secs(ack?.p50Seconds), num: true },
        { text: secs(ack?.p90Seconds), num: true },
      ]
    }),
  )
  setMetric('follow-ups-overdue', String(q.overdueFollowUps.total), q.overdueFollowUps.total)
}

async function refresh() {
  clearTimeout(state.timer)
  // Refreshes overlap (a key press, a new choice, the timer): the last one started wins. An earlier
  // one that answers later must not show the figures of a query no longer chosen, nor keep a timer
  // of its own running beside the later one's.
  const seq = ++state.seq
  const superseded = () => {
    if (seq === state.seq) return false
    document.body.dataset.superseded = String(Number(document.body.dataset.superseded ?? 0) + 1)
    return true
  }
  try {
    const q = query(sessionStorage.getItem(KEY_ITEM) ? await reportZone() : 'UTC')
    const [summary, queues] = await Promise.all([getJson(`/v1/reports/summary?${q}`), getJson('/v1/reports/queues')])
    if (superseded()) return
    renderSummary(summary)
    renderQueues(queues, summary)
    // For tests and for anyone checking a figure: the exact query the page shows.
    document.body.dataset.query = q.toString()
    document.body.dataset.loadedAt = summary.generatedAt
    $('#status').textContent = `Updated ${new Date().toLocaleTimeString()}${state.paused ? ' · live updates paused' : ' · refreshing every 15 s'}`
  } catch (err) {
    if (superseded()) return
    // While the key form is up, its message stays.
    if ($('#key-form').hidden) $('#status').textContent = `Could not load the figures: ${err.message}. Retrying.`
  }
  if (!state.paused) state.timer = setTimeout(refresh, REFRESH_MS)
}

function togglePause() {
  state.paused = !state.paused
  $('#pause').setAttribute('aria-pressed', String(state.paused))
  $('#pause').firstChild.textContent = state.paused ? 'Resume live ' : 'Pause live '
  if (state.paused) clearTimeout(state.timer)
  refresh()
}

$('#refresh').addEventListener('click', refresh)
$('#pause').addEventListener('click', togglePause)
for (const id of ['#range', '#bucket', '#agency']) $(id).addEventListener('change', refresh)
document.addEventListener('keydown', (e) => {
  // Single-key shortcuts, except while typing in a control.
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest('select, input, textarea')) return
  if (e.key === 'r') refresh()
  else if (e.key === 'p') togglePause()
})
window.addEventListener('resize', () => state.chart?.setSize({ width: Math.max(320, $('#trend').clientWidth), height: 300 }))
refresh()
