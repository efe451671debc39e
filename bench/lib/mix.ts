/**
 * The call mix every benchmark draws from, weighted roughly like a county 911 day: mostly police
 * business, a steady share of medical and mental-health calls, a few agency-local and unknown codes.
 * Seeded, so every run measures the same mix.
 */
import type { FlagName } from '../../src/routing/index.js'

export function seededRandom(seed = 0x2545f491): () => number {
  let s = seed | 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 0x1_0000_0000
  }
}

export const pickWith =
  (random: () => number) =>
  <T>(xs: readonly T[]): T =>
    xs[Math.floor(random() * xs.length)]!

export const NATURE_MIX: readonly [string, number][] = [
  ['NOISE', 8], ['SUSP', 8], ['PARKING', 5], ['MVA', 6], ['TSTOP', 6], ['LARCENY', 5], ['BURGLARY', 3],
  ['DISORD', 4], ['TRESPASS', 3], ['ASSAULT', 3], ['DVA', 2], ['DVNA', 3], ['FIGHT', 2], ['THREATS', 2],
  ['WEAPON', 1], ['ROBBERY', 1], ['SICK', 6], ['FALL', 4], ['CARDIAC', 2], ['OD', 2], ['PERUNCON', 2],
  ['MVAINJY', 2], ['EDP', 5], ['SUICTHRT', 3], ['SUICIDE', 1], ['WELFARE', 6], ['CITASST', 3], ['INTOX', 3],
  ['10-56', 1], ['ZZ-LOCAL', 1],
]
export const NATURE_BAG: readonly string[] = NATURE_MIX.flatMap(([code, weight]) => Array<string>(weight).fill(code))

export const AGENCIES = ['hastings-pd', 'rosemount-pd', 'apple-valley-pd', 'west-st-paul-pd', 'south-st-paul-pd', 'dakota-so', 'example-city-pd'] as const

export const FLAG_RATE: Readonly<Record<FlagName, number>> = {
  weapons: 0.04, violence: 0.06, threatToOthers: 0.04, crimeInProgress: 0.05, medicalEmergency: 0.1, injury: 0.08,
  mentalHealth: 0.15, suicidalIdeation: 0.05, meansAtHand: 0.03, substanceUse: 0.08, coResponseRequested: 0.03,
}
