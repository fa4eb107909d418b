// The half-open check (src/liveness.ts) on vitest's fake clock: no real waiting.
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest'

import { Liveness } from '../../src/liveness.js'

describe('liveness', () => {
  let probes: number
  let deaths: number[]
  let liveness: Liveness

  beforeEach(() => {
    vi.useFakeTimers()
    probes = 0
    deaths = []
    liveness = new Liveness({ idleMs: 1000, answerMs: 300 }, () => { probes++ }, (silent) => { deaths.push(silent) })
  })
  afterEach(() => {
    liveness.stop()
    vi.useRealTimers()
  })

  test('a silent connection is probed after idleMs, then declared dead after answerMs', () => {
    liveness.start()
    vi.advanceTimersByTime(999)
    expect(probes).toBe(0)
    vi.advanceTimersByTime(1)
    expect(probes).toBe(1)
    vi.advanceTimersByTime(299)
    expect(deaths).toEqual([])
    vi.advanceTimersByTime(1)
    expect(deaths).toEqual([1300])
    vi.advanceTimersByTime(10_000)
    expect([probes, deaths.length]).toEqual([1, 1]) // once dead, it waits for the next start
  })

  test('any message answers a probe and restarts the idle clock', () => {
    liveness.start()
    vi.advanceTimersByTime(1000)
    expect(probes).toBe(1)
    vi.advanceTimersByTime(200)
    liveness.heard()
    vi.advanceTimersByTime(999)
    expect([probes, deaths.length]).toEqual([1, 0])
    vi.advanceTimersByTime(1)
    expect(probes).toBe(2)
  })

  test('a connection that keeps talking is never probed', () => {
    liveness.start()
    for (let i = 0; i < 50; i++) {
      vi.advanceTimersByTime(500)
      liveness.heard()
    }
    expect([probes, deaths.length]).toEqual([0, 0])
  })

  test('stop cancels the probe and the verdict; idleMs 0 turns the check off', () => {
    liveness.start()
    vi.advanceTimersByTime(1000)
    liveness.stop()
    vi.advanceTimersByTime(10_000)
    expect([probes, deaths.length]).toEqual([1, 0])
    const off = new Liveness({ idleMs: 0, answerMs: 300 }, () => { probes++ }, () => { deaths.push(0) })
    off.start()
    vi.advanceTimersByTime(60_000)
    expect([probes, deaths.length]).toEqual([1, 0])
  })
})
