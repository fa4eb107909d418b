/**
 * A connection that has gone quiet is asked for a sign of life; one that stays silent is dead.
 *
 * Browsers hide WebSocket pings from scripts, and a socket whose network vanished without a
 * FIN or RST (a phone moving from Wi-Fi to cellular, a NAT that forgot the flow) stays "open"
 * for minutes while edits pile up unsent. After `idleMs` without any message the provider sends
 * a probe (query-awareness: the server always answers it, spec §2.5); no message within
 * `answerMs` after it means the connection is dead, and the provider drops it and reconnects.
 * A message resets the clock. Timers only: no sleeping, one timer at a time.
 */

import { CloseCode, type WebSocketLike } from './socket.js'

export interface LivenessOptions {
  /** Silence (ms) after which the connection is probed; 0 turns the check off. */
  idleMs: number
  /** How long (ms) a probe waits for any message before the connection counts as dead. */
  answerMs: number
}

export const DEFAULT_LIVENESS: LivenessOptions = { idleMs: 25_000, answerMs: 10_000 }

export class Liveness {
  private last = 0
  private probedAt: number | null = null
  private timer: ReturnType<typeof setTimeout> | null = null

  constructor (
    private readonly options: LivenessOptions,
    private readonly probe: () => void,
    private readonly dead: (silentMs: number) => void,
    private readonly now: () => number = Date.now
  ) {}

  /** The connection opened: start watching it. */
  start (): void {
    this.stop()
    if (this.options.idleMs <= 0) return
    this.last = this.now()
    this.arm(this.options.idleMs)
  }

  /** A message arrived (cheap: a timestamp; the timer looks at it when it fires). */
  heard (): void {
    this.last = this.now()
    this.probedAt = null
  }

  /** The connection closed: stop watching. */
  stop (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.probedAt = null
  }

  private arm (delay: number): void {
    this.timer = setTimeout(() => { this.check() }, Math.max(delay, 1))
  }

  private check (): void {
    this.timer = null
    const now = this.now()
    const silent = now - this.last
    if (this.probedAt !== null && now - this.probedAt >= this.options.answerMs) {
      this.probedAt = null
      this.dead(silent)
      return
    }
    if (this.probedAt !== null) {
      this.arm(this.probedAt + this.options.answerMs - now)
    } else if (silent >= this.options.idleMs) {
      this.probedAt = now
      this.probe()
      this.arm(this.options.answerMs)
    } else {
      this.arm(this.options.idleMs - silent)
    }
  }
}

/** The close reason reported for a connection given up after `silentMs` without a message. */
export function silenceReason (silentMs: number): string {
  return `no message from the server for ${Math.round(silentMs / 1000)} s`
}

/** Close a socket given up as half-open. Its owner has let go of it first (its close handshake
 * could take minutes); closing a dead socket may throw in some WebSocket implementations. */
export function abandon (ws: WebSocketLike): void {
  try {
    ws.close(CloseCode.NORMAL, 'no answer to a liveness probe')
  } catch {}
}
