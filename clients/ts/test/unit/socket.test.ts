// Close-code rules (proto/spec.md §6) and the reconnect delays, without sleeping.
import { describe, expect, test } from 'vitest'

import { backoff, needsNewToken, reconnects, tokenExpiry } from '../../src/socket.js'

describe('close codes', () => {
  test.each([1000, 1006, 1011, 1012, 4001, 4002, 4003, 4004, 4401, 4408, 4409, 4429, 3000])(
    '%d reconnects', (code) => { expect(reconnects(code)).toBe(true) })
  test.each([1009, 4500, 4503, 4999])('%d stops', (code) => { expect(reconnects(code)).toBe(false) })
  test('only 4401 needs a new token', () => {
    expect(needsNewToken(4401)).toBe(true)
    expect(needsNewToken(4001)).toBe(false)
  })
})

describe('backoff', () => {
  const first = (random: number, n: number): number[] => {
    const delays = backoff({ random: () => random })
    return Array.from({ length: n }, () => delays.next().value)
  }

  test('starts with a random delay below 1 s, then grows by 1.618 up to 90 s', () => {
    const delays = first(0.5, 20)
    expect(delays[0]).toBe(500)
    expect(delays[1]).toBeCloseTo(809)
    expect(delays[2]).toBeCloseTo(809 * 1.618, 0)
    expect(Math.max(...delays)).toBe(90_000)
    expect(delays.at(-1)).toBe(90_000)
  })

  test('a first delay of 0 still grows from 0.1 s', () => {
    const delays = first(0, 3)
    expect(delays[0]).toBe(0)
    expect(delays[1]).toBeCloseTo(161.8)
  })

  test('the first delay is spread over [0, 1 s)', () => {
    expect(first(0.999, 1)[0]).toBeLessThan(1000)
    expect(first(0.001, 1)[0]).toBeGreaterThanOrEqual(0)
  })
})

describe('token expiry', () => {
  const jwt = (payload: object): string =>
    `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`
  test('reads exp from a JWT', () => { expect(tokenExpiry(jwt({ exp: 1_900_000_000 }))).toBe(1_900_000_000) })
  test('is null without exp or for garbage', () => {
    expect(tokenExpiry(jwt({ sub: 'a' }))).toBe(null)
    expect(tokenExpiry('not a token')).toBe(null)
  })
})
