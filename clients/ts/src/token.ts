/**
 * The connection's token (proto/spec.md §2.4): a fixed string, or a function called for a new
 * one before the current one expires and after the server refused it (4401). No I/O, no timers:
 * the provider asks `refreshDelay()` and sets the timer.
 */

import { tokenExpiry } from './socket.js'

/** A token, or a function giving a fresh one (called again before the current one expires). */
export type TokenSource = string | (() => string | Promise<string>)

/** Longest a timer is set for: setTimeout overflows above 2^31 − 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class TokenKeeper {
  private readonly source: TokenSource | undefined
  private readonly marginMs: number
  private token: string | null

  constructor (source: TokenSource | undefined, marginMs: number) {
    this.source = source
    this.marginMs = marginMs
    this.token = typeof source === 'string' ? source : null
  }

  /** Whether a new token can be had (a function): what decides reconnecting after 4401. */
  get renewable (): boolean {
    return typeof this.source === 'function'
  }

  /** The token for the next connection (null: none); calls the function when it has none valid. */
  async current (now = Date.now()): Promise<string | null> {
    if (this.source === undefined) return null
    if (typeof this.source === 'string') return this.source
    const exp = this.token !== null ? tokenExpiry(this.token) : null
    if (this.token === null || (exp !== null && exp * 1000 <= now)) this.token = await this.source()
    return this.token
  }

  /** Get a new token from the function now (null for a fixed token). */
  async renew (): Promise<string | null> {
    if (typeof this.source !== 'function') return null
    this.token = await this.source()
    return this.token
  }

  /** The server refused the token (4401): the next connection asks for a new one. */
  refused (): void {
    if (this.renewable) this.token = null
  }

  /**
   * Ms until the current token should be renewed (`marginMs` before it expires, at most half
   * its remaining life), or null: nothing to renew, or it has expired already (the server
   * closes with 4401 and the next connection asks for a new one).
   */
  refreshDelay (now = Date.now()): number | null {
    if (!this.renewable || this.token === null) return null
    const exp = tokenExpiry(this.token)
    if (exp === null) return null
    const life = exp * 1000 - now
    if (life <= 0) return null
    return Math.min(MAX_TIMER_MS, Math.max(0, life - Math.min(this.marginMs, life / 2)))
  }
}
