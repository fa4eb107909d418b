// Close-code rules (proto/spec.md §6) and the reconnect delays, without sleeping.
import { describe, expect, test } from 'vitest'

import { backoff, needsNewToken, reconnects, tokenExpiry } from '../../src/socket.js'
import { TokenKeeper } from '../../src/token.js'

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

describe('TokenKeeper', () => {
  const jwt = (exp: number): string => `e30.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.sig`
  const NOW = 1_800_000_000_000

  test('a fixed token is used as it is and never renewed', async () => {
    const keeper = new TokenKeeper('fixed', 60_000)
    expect(await keeper.current()).toBe('fixed')
    expect(keeper.renewable).toBe(false)
    expect(keeper.refreshDelay(NOW)).toBe(null)
  })

  test('a function is renewed a margin before expiry, at most half its remaining life', async () => {
    let exp = NOW / 1000 + 3600
    const keeper = new TokenKeeper(() => jwt(exp), 60_000)
    await keeper.current(NOW)
    expect(keeper.refreshDelay(NOW)).toBe(3_540_000)
    exp = NOW / 1000 + 10
    await keeper.renew()
    expect(keeper.refreshDelay(NOW)).toBe(5_000)
    expect(keeper.refreshDelay(NOW + 11_000)).toBe(null) // expired: the server closes with 4401
  })

  test('after 4401 the next connection asks the function again; an expired token too', async () => {
    let calls = 0
    const keeper = new TokenKeeper(() => jwt(NOW / 1000 + 60 * ++calls), 60_000)
    await keeper.current(NOW)
    await keeper.current(NOW)
    expect(calls).toBe(1)
    keeper.refused()
    await keeper.current(NOW)
    expect(calls).toBe(2)
    await keeper.current(NOW + 10 * 60_000) // past its exp
    expect(calls).toBe(3)
  })
})
