/** One line of the results table. */
export interface Row {
  bench: string
  metric: string
  value: number | string
  unit?: string
  baseline?: number
  /** value / baseline (or as the benchmark defines it). */
  ratio?: number
  target?: string
  /** undefined: no target, or nothing to compare (n/a). */
  pass?: boolean
}

const fmt = (x: number | string | undefined, unit = ''): string => {
  if (x === undefined) return ''
  if (typeof x === 'string') return x
  if (!Number.isFinite(x)) return 'n/a'
  const abs = Math.abs(x)
  const s = Number.isInteger(x) ? x.toLocaleString('en-US') : abs >= 1000 ? Math.round(x).toLocaleString('en-US') : abs >= 100 ? x.toFixed(0) : abs >= 10 ? x.toFixed(1) : x.toFixed(2)
  return unit ? `${s} ${unit}` : s
}

export function table(rows: Row[]): string {
  const head = ['benchmark', 'metric', 'value', 'baseline', 'ratio', 'target', '']
  const body = rows.map((r) => [
    r.bench,
    r.metric,
    fmt(r.value, r.unit),
    fmt(r.baseline, r.unit),
    r.ratio === undefined ? '' : Number.isFinite(r.ratio) ? `${r.ratio >= 100 ? Math.round(r.ratio) : r.ratio.toFixed(2)}×` : 'n/a',
    r.target ?? '',
    r.pass === undefined ? '' : r.pass ? 'ok' : 'MISS',
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd()
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n')
}
