/**
 * Which local edits the server has made durable (proto/spec.md §4.2, §4.3). No I/O.
 *
 * Every local edit gets a version (1, 2, …) and is kept until an ACK covers it. Each
 * document-bearing message of a connection gets a seq (1, 2, … per connection, what ACK counts);
 * an edit sent in message `seq` is durable once ACK(n ≥ seq) arrives. After a reconnect the
 * edits still kept are resent, merged into one update.
 */

import * as Y from 'yjs'

export class Edits {
  /** Local edits made so far (the last version given). */
  localVersion = 0
  /** Every edit up to this version is durable at the server. */
  durableVersion = 0
  /** Document-bearing messages sent on this connection. */
  seq = 0
  private kept: Array<[number, Uint8Array]> = [] // (version, update), oldest first
  private inFlight: Array<[number, number]> = [] // (seq, the version its message covers)

  /** Edits not yet known durable. */
  get pending (): number {
    return this.kept.length
  }

  /** The kept edits' updates, oldest first (what the offline copy stores). */
  updates (): Uint8Array[] {
    return this.kept.map(([, update]) => update)
  }

  /** How many of the edits up to `version` are still pending. */
  pendingUpTo (version: number): number {
    return this.kept.filter(([v]) => v > this.durableVersion && v <= version).length
  }

  /** A new connection: numbering starts again, nothing is in flight. */
  connectionMade (): void {
    this.seq = 0
    this.inFlight = []
  }

  /** Record a local edit; returns its version. */
  record (update: Uint8Array): number {
    this.localVersion++
    this.kept.push([this.localVersion, update])
    return this.localVersion
  }

  /** Number the next document-bearing message; `version`: the edits it carries (if any). */
  numberMessage (version?: number): number {
    this.seq++
    if (version !== undefined) this.inFlight.push([this.seq, version])
    return this.seq
  }

  /** ACK(seq): returns whether any kept edit became durable. */
  acknowledged (seq: number): boolean {
    while (this.inFlight.length > 0 && this.inFlight[0][0] <= seq) {
      const [, version] = this.inFlight.shift() as [number, number]
      this.durableVersion = Math.max(this.durableVersion, version)
    }
    const before = this.kept.length
    while (this.kept.length > 0 && this.kept[0][0] <= this.durableVersion) this.kept.shift()
    return this.kept.length !== before
  }

  /** The kept edits merged into one update and the last version it covers, or null. */
  resend (): { update: Uint8Array, version: number } | null {
    if (this.kept.length === 0) return null
    return {
      update: Y.mergeUpdates(this.updates()),
      version: this.kept[this.kept.length - 1][0]
    }
  }

  /** Forget every kept edit (the history they belong to was reset, spec §4.6). */
  dropAll (): void {
    this.kept = []
    this.inFlight = []
    this.durableVersion = this.localVersion
  }

  /** Put edits kept by an earlier page before the ones of this page (none acknowledged yet). */
  prepend (updates: Uint8Array[]): void {
    const k = updates.length
    this.kept = [
      ...updates.map((u, i): [number, Uint8Array] => [i + 1, u]),
      ...this.kept.map(([v, u]): [number, Uint8Array] => [v + k, u])
    ]
    this.localVersion += k
  }
}
