/**
 * WedsyncProvider: one wedding's Y.Doc kept in sync with WedSync Gateway over a WebSocket, with
 * every extension of proto/spec.md §4: durable ACKs ("saved" means acknowledged by the server,
 * never "sent"), REJECT with a reason, RESUME from (epoch, offset, state vector) with a
 * gzip-compressed CATCH_UP, RESET of a history an operator reset, DRAIN, STATUS and token refresh.
 * It reconnects by the close-code rules of §6 with jittered backoff and resends every edit the
 * server has not acknowledged (§4.3). With `offline: true` the document, the unacknowledged edits
 * and the resume position live in IndexedDB (y-indexeddb), so a closed tab loses nothing.
 *
 * The connection rules are those of clients/python/gateway_client/sync.py (ClientSync) and the
 * edit bookkeeping that of clients/python/gateway_client/sansio.py (ClientProtocol).
 */

import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { ObservableV2 } from 'lib0/observable'

import {
  ALL_FEATURES, AUTH_PERMISSION_DENIED, AUTH_TOKEN, CATCH_UP_GZIP, CATCH_UP_RESET,
  EXTENSION_VERSION, Feature, STATUS_ACKS_PAUSED, decodeServerMessage, encode,
  type Message
} from './protocol.js'
import {
  CloseCode, backoff, gunzip, needsNewToken, reconnects,
  type WebSocketConstructor, type WebSocketLike
} from './socket.js'
import { Edits } from './edits.js'
import { DEFAULT_LIVENESS, Liveness, abandon, silenceReason, type LivenessOptions } from './liveness.js'
import { OfflineStore } from './offline.js'
import { TokenKeeper, type TokenSource } from './token.js'
import type { WedsyncSocket } from './mux.js'
import { defaultPlatform, withPlatform, type Platform } from './platform.js'

export type { TokenSource } from './token.js'

export type ConnectionStatus = 'connecting' | 'connected' | 'disconnected'

export interface WedsyncProviderOptions {
  /** Sent in an auth message first on every connection (spec §2.4); none in development. */
  token?: TokenSource
  /** Keep the document, unacknowledged edits and the resume position in IndexedDB. */
  offline?: boolean
  /** The IndexedDB database name (default `wedsync:<weddingId>`). */
  offlineName?: string
  /** The WebSocket class: the browser's by default; the `ws` package's in Node (any class with
   * the browser's WebSocket API: see `WebSocketLike`). */
  WebSocketPolyfill?: WebSocketConstructor | (new (url: string, ...rest: any[]) => unknown)
  /** Several gateway URLs (each like the first argument), rotated on each reconnect. */
  urls?: string[]
  /** Connect at once (default true); otherwise call `connect()`. */
  connect?: boolean
  /** An awareness instance to use (default: a new one on `doc`). */
  awareness?: awarenessProtocol.Awareness
  /** Reconnect delays (ms) for tests; the spec §6 backoff by default. */
  delays?: () => Iterator<number>
  /** Refresh a token this many ms before it expires (default 60 s, at most half its life). */
  tokenRefreshMarginMs?: number
  /** A connection silent for `idleMs` (default 25 s) is probed; if nothing arrives within
   * `answerMs` (default 10 s) it is dropped and the provider reconnects. `idleMs: 0`: off. */
  liveness?: Partial<LivenessOptions>
  /** What this client runs on, declared as `?platform=` for the operators' metrics (spec §1):
   * `web`, `pwa`, `ios`, `android` or `integration`; default `pwa` in an installed app
   * (display-mode standalone), else `web`. */
  platform?: Platform
  /** Share this `/mux` socket with other providers (spec §10; the `url` argument is unused):
   * acks, rejects, resume and reconnects stay this wedding's own. */
  socket?: WedsyncSocket
}


export interface RejectEvent { seq: number, field: string, reason: string }
export interface SavedEvent { pending: number, acksPaused: boolean }
export interface CloseEvent { code: number, reason: string, willReconnect: boolean }

export interface WedsyncProviderEvents {
  synced: (event: { synced: boolean }) => void
  saved: (event: SavedEvent) => void
  reject: (event: RejectEvent) => void
  reset: (event: { doc: Y.Doc }) => void
  status: (event: { status: ConnectionStatus }) => void
  close: (event: CloseEvent) => void
  error: (event: { error: Error }) => void
}

const DEFAULT_REFRESH_MARGIN_MS = 60_000

/**
 * The provider. `provider.doc` is the document (a new one after a `reset`); `awareness` the
 * y-protocols Awareness shared with the other clients of the wedding.
 */
export class WedsyncProvider extends ObservableV2<WedsyncProviderEvents> {
  readonly weddingId: string
  readonly urls: string[]
  readonly awareness: awarenessProtocol.Awareness
  /** The URL of the current (or next) connection; reconnects rotate through `urls`. */
  url: string
  /** Declared on each connection as `?platform=` (spec §1). */
  readonly platform: Platform
  status: ConnectionStatus = 'disconnected'
  /** This connection's initial sync (the CATCH_UP) is done. */
  synced = false
  /** The server accepted feature ACKS on this connection (its HELLO answer). */
  acksEnabled = false
  /** The node cannot make edits durable now (STATUS, spec §4.7); their ACKs come later. */
  acksPaused = false
  /** REJECTs received: changes the server refused and undid (spec §4.4). */
  readonly rejected: RejectEvent[] = []
  /** The last close the server (or the network) gave. */
  lastClose: { code: number, reason: string } | null = null
  /** WebSocket connections opened so far. */
  connections = 0
  /** DRAIN messages received: a node said it was shutting down (spec §4.5). */
  drains = 0
  /** Times the server said the wedding's history was reset. */
  resets = 0
  /** Each CATCH_UP received: its update's size as received, and its flags (spec §4.6). */
  readonly catchUps: Array<{ bytes: number, gzip: boolean, reset: boolean }> = []
  /** The last (epoch, offset) the server said this document covers (spec §4.6). */
  epoch = 0
  offset = 0
  /** Local edits made so far (the last version given). */
  get localVersion (): number {
    return this.edits.localVersion
  }

  /** Every local edit up to this version is durable at the server. */
  get durableVersion (): number {
    return this.edits.durableVersion
  }

  /** Resolves once the offline copy (if any) is loaded into the document. */
  readonly whenLoaded: Promise<void>

  private _doc: Y.Doc
  private readonly tokens: TokenKeeper
  private readonly WebSocketClass: WebSocketConstructor
  private readonly offlineName: string | null
  private offline: OfflineStore | null = null
  private adopting = false
  private readonly makeDelays: () => Iterator<number>
  private delays: Iterator<number>
  private ws: WebSocketLike | null = null
  private shouldConnect = false
  private opening = false
  private readonly ownAwareness: boolean
  private destroyed = false
  private attempts = 0
  private caughtUp = false
  private heldStep1: Uint8Array | null = null
  private retryMs: number | null = null
  private readonly edits = new Edits()
  private reportedPending = 0
  private inbox: Promise<void> = Promise.resolve()
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private refreshTimer: ReturnType<typeof setTimeout> | null = null
  private readonly liveness: Liveness
  private saving: Promise<void> = Promise.resolve()
  private saveQueued = false
  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin === this || (this.offline !== null && origin === this.offline.origin)) return
    this.localEdit(update)
  }

  private readonly onAwarenessUpdate = (
    changes: { added: number[], updated: number[], removed: number[] }, origin: unknown
  ): void => {
    if (origin === this) return
    const mine = [...changes.added, ...changes.updated, ...changes.removed]
      .filter((id) => id === this.awareness.clientID)
    if (mine.length > 0 && this.synced) {
      this.send(awarenessMessage(this.awareness, mine))
    }
  }

  private readonly onOnline = (): void => {
    if (this.shouldConnect && this.ws === null) this.reconnectNow()
  }

  private readonly onOffline = (): void => {
    // The platform knows the network is gone before TCP does: show "offline" at once.
    if (this.ws !== null) this.ws.close(CloseCode.NORMAL, 'the device went offline')
  }

  private readonly onUnload = (): void => {
    this.awareness.setLocalState(null) // tell the others at once that this tab left
  }

  constructor (url: string, weddingId: string, doc: Y.Doc, options: WedsyncProviderOptions = {}) {
    super()
    this.weddingId = weddingId
    const bases = options.socket !== undefined
      ? [options.socket.url]
      : options.urls !== undefined && options.urls.length > 0 ? options.urls : [url]
    this.urls = bases.map((base) => `${base.replace(/\/+$/, '')}/${encodeURIComponent(weddingId)}`)
    this.url = this.urls[0]
    this.platform = options.platform ?? defaultPlatform()
    this._doc = doc
    this.tokens = new TokenKeeper(options.token, options.tokenRefreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS)
    const WS = options.socket !== undefined
      ? options.socket.channelClass(weddingId)
      : (options.WebSocketPolyfill ?? globalThis.WebSocket) as WebSocketConstructor | undefined
    if (WS === undefined) throw new TypeError('no WebSocket: pass WebSocketPolyfill (Node: ws)')
    this.WebSocketClass = WS
    this.offlineName = options.offline === true ? (options.offlineName ?? `wedsync:${weddingId}`) : null
    this.liveness = new Liveness(
      { ...DEFAULT_LIVENESS, ...options.liveness },
      () => { this.send(encode({ type: 'QueryAwareness' })) },
      (silentMs) => { this.connectionDead(silentMs) }
    )
    this.makeDelays = options.delays ?? (() => backoff())
    this.delays = this.makeDelays()
    this.ownAwareness = options.awareness === undefined
    this.awareness = options.awareness ?? new awarenessProtocol.Awareness(doc)
    doc.on('update', this.onDocUpdate)
    this.awareness.on('update', this.onAwarenessUpdate)
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this.onOnline)
      globalThis.addEventListener('offline', this.onOffline)
      globalThis.addEventListener('pagehide', this.onUnload)
    }
    this.whenLoaded = this.offlineName !== null ? this.loadOffline(this.offlineName) : Promise.resolve()
    if (options.connect !== false) this.connect()
  }

  /** The wedding document (a new Y.Doc after the server reset the wedding's history). */
  get doc (): Y.Doc {
    return this._doc
  }

  /** Local edits not yet acknowledged as durable (when offline: stored in IndexedDB). */
  get pendingEdits (): number {
    return this.reportedPending
  }

  /** Connect (or come back after `disconnect()`): resumes where the document stands. */
  connect (): void {
    if (this.destroyed) throw new Error('the provider is destroyed')
    if (this.shouldConnect) return
    this.shouldConnect = true
    this.delays = this.makeDelays()
    void this.whenLoaded.then(() => this.open())
  }

  /** Close the connection and stay offline; edits go on locally and are sent on `connect()`. */
  disconnect (): void {
    this.shouldConnect = false
    this.clearTimers()
    // The server removes this connection's presence when it closes (spec §3, CLOSED).
    if (this.ws !== null) this.ws.close(CloseCode.NORMAL, 'the client disconnected')
  }

  /** Disconnect and release everything; the offline copy stays in IndexedDB. */
  destroy (): void {
    if (this.destroyed) return
    if (this.ownAwareness) this.awareness.destroy() // sends this client's removal while connected
    this.disconnect()
    this.destroyed = true
    this._doc.off('update', this.onDocUpdate)
    this.awareness.off('update', this.onAwarenessUpdate)
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this.onOnline)
      globalThis.removeEventListener('offline', this.onOffline)
      globalThis.removeEventListener('pagehide', this.onUnload)
    }
    this.offline?.destroy()
    super.destroy()
  }

  // -- connection ---------------------------------------------------------------------------

  private async open (): Promise<void> {
    if (!this.shouldConnect || this.ws !== null || this.opening || this.destroyed) return
    if (globalThis.navigator?.onLine === false) {
      this.setStatus('disconnected') // the 'online' event connects (onOnline)
      return
    }
    this.setStatus('connecting')
    let token: string | null
    this.opening = true
    try {
      token = await this.tokens.current()
    } catch (error) {
      this.emit('error', [{ error: asError(error) }])
      this.scheduleReconnect()
      this.setStatus('disconnected')
      return
    } finally {
      this.opening = false
    }
    if (!this.shouldConnect || this.ws !== null || this.destroyed) {
      if (this.ws === null) this.setStatus('disconnected')
      return
    }
    this.url = this.urls[this.attempts % this.urls.length]
    this.attempts++
    const ws = new this.WebSocketClass(withPlatform(this.url, this.platform))
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    ws.onopen = () => {
      if (this.ws !== ws) return
      this.connections++
      this.liveness.start()
      this.connectionMade(token)
      this.setStatus('connected')
    }
    ws.onmessage = (event) => {
      if (this.ws !== ws || !(event.data instanceof ArrayBuffer)) return // text: not ours
      this.liveness.heard()
      const data = new Uint8Array(event.data)
      this.inbox = this.inbox.then(async () => await this.receive(ws, data)).catch((error: unknown) => {
        // Not the server's fault we know of (a Y.Doc observer threw, say): start over.
        this.emit('error', [{ error: asError(error) }])
        if (this.ws === ws) ws.close(CloseCode.NORMAL, 'the client failed handling a message')
      })
    }
    ws.onclose = (event) => {
      if (this.ws === ws) this.connectionLost(event.code, event.reason)
    }
    ws.onerror = () => {} // a close event follows
  }

  private connectionMade (token: string | null): void {
    this.edits.connectionMade()
    this.synced = this.acksEnabled = this.caughtUp = false
    this.heldStep1 = null
    this.retryMs = null
    if (token !== null) this.send(encode({ type: 'Auth', authType: AUTH_TOKEN, text: token }))
    this.send(encode({ type: 'Hello', version: EXTENSION_VERSION, features: ALL_FEATURES }))
    const stateVector = Y.encodeStateVector(this._doc)
    this.send(encode({ type: 'Resume', epoch: this.epoch, offset: this.offset, stateVector }))
    this.scheduleTokenRefresh()
  }

  /** No message answered a liveness probe: the socket is half-open. Its close handshake could
   * take minutes, so the provider lets go of it now and reconnects (it ignores its events). */
  private connectionDead (silentMs: number): void {
    const ws = this.ws
    if (ws === null) return
    this.connectionLost(CloseCode.ABNORMAL, silenceReason(silentMs))
    abandon(ws)
  }

  private connectionLost (code: number, reason: string): void {
    this.ws = null
    this.liveness.stop()
    this.lastClose = { code, reason }
    const wasSynced = this.synced
    this.synced = this.caughtUp = false
    if (wasSynced) this.emit('synced', [{ synced: false }])
    this.acksPaused = false // the next node says so again if its store is failing too
    this.edits.connectionMade() // nothing in flight any more: whatever was unacknowledged is kept
    this.inbox = Promise.resolve()
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    const others = [...this.awareness.getStates().keys()].filter((id) => id !== this.awareness.clientID)
    awarenessProtocol.removeAwarenessStates(this.awareness, others, this)
    let willReconnect = this.shouldConnect && !this.destroyed && reconnects(code)
    if (willReconnect && needsNewToken(code)) {
      // proto/spec.md §6: the same token fails again; only a token function gives a new one.
      willReconnect = this.tokens.renewable
      this.tokens.refused()
    }
    this.emit('close', [{ code, reason, willReconnect }])
    if (willReconnect) this.scheduleReconnect()
    else this.shouldConnect = false
    this.setStatus('disconnected')
    this.emitSaved()
  }

  private scheduleReconnect (): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    let delay = this.delays.next().value as number
    if (this.retryMs !== null) delay += this.retryMs // after DRAIN (spec §4.5, §6)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      void this.open()
    }, delay) // reconnect backoff: by design a delay
  }

  private reconnectNow (): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    this.delays = this.makeDelays()
    void this.open()
  }

  private clearTimers (): void {
    this.liveness.stop()
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.reconnectTimer = this.refreshTimer = null
  }

  private send (data: Uint8Array): void {
    const ws = this.ws
    if (ws !== null && ws.readyState === 1) ws.send(data)
  }

  private setStatus (status: ConnectionStatus): void {
    if (this.status === status) return
    this.status = status
    this.emit('status', [{ status }])
  }

  // -- tokens ---------------------------------------------------------------------------------

  private scheduleTokenRefresh (): void {
    const delay = this.tokens.refreshDelay()
    if (delay === null) return
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.refreshTimer = setTimeout(() => { void this.refreshToken() }, delay)
  }

  /** Fetch a new token now and send it on the open connection (spec §2.4 "While connected"). */
  async refreshToken (): Promise<void> {
    let token: string | null
    try {
      token = await this.tokens.renew()
    } catch (error) {
      this.emit('error', [{ error: asError(error) }])
      return
    }
    if (token !== null && this.ws !== null) {
      this.send(encode({ type: 'Auth', authType: AUTH_TOKEN, text: token }))
      this.scheduleTokenRefresh()
    }
  }

  // -- server messages ------------------------------------------------------------------------

  private async receive (ws: WebSocketLike, data: Uint8Array): Promise<void> {
    if (this.ws !== ws) return // a message of a connection already lost
    let message: Message
    try {
      message = decodeServerMessage(data)
    } catch (error) {
      this.emit('error', [{ error: asError(error) }])
      ws.close(CloseCode.NORMAL, 'the server broke the protocol') // reconnect with backoff
      return
    }
    switch (message.type) {
      case 'SyncUpdate':
        Y.applyUpdate(this._doc, message.update, this)
        break
      case 'Ack':
        this.acknowledged(message.seq)
        break
      case 'Position':
        this.epoch = message.epoch
        this.offset = message.offset
        this.saveOffline()
        break
      case 'SyncStep1':
        if (!this.caughtUp) this.heldStep1 = message.stateVector // answered after CATCH_UP
        else this.answer(message.stateVector)
        break
      case 'SyncStep2': // the server answered a sync step 1 (not sent by this provider)
        Y.applyUpdate(this._doc, message.update, this)
        this.live()
        break
      case 'CatchUp': {
        let update = message.update
        const gzip = (message.flags & CATCH_UP_GZIP) !== 0
        const reset = (message.flags & CATCH_UP_RESET) !== 0
        this.catchUps.push({ bytes: update.length, gzip, reset })
        if (gzip) update = await gunzip(update)
        if (this.ws !== ws) return
        if (reset) await this.replaceDoc(update)
        else Y.applyUpdate(this._doc, update, this)
        this.epoch = message.epoch
        this.offset = message.offset
        this.caughtUp = true
        const held = this.heldStep1
        this.heldStep1 = null
        if (held !== null) this.answer(held)
        this.resend()
        this.live()
        this.saveOffline()
        break
      }
      case 'Hello':
        this.acksEnabled = (message.features & Feature.ACKS) !== 0
        break
      case 'Reject': {
        const event = { seq: message.seq, field: message.field, reason: message.reason }
        this.rejected.push(event)
        this.emit('reject', [event])
        break
      }
      case 'Drain':
        this.drains++
        this.retryMs = message.retryMs
        break
      case 'Status':
        this.acksPaused = (message.flags & STATUS_ACKS_PAUSED) !== 0
        this.emitSaved()
        break
      case 'AwarenessUpdate':
        awarenessProtocol.applyAwarenessUpdate(this.awareness, message.payload, this)
        break
      case 'Auth':
        if (message.authType === AUTH_PERMISSION_DENIED) {
          this.emit('error', [{ error: new Error(`permission denied: ${message.text}`) }])
        }
        break
      default:
        break // QueryAwareness, Resume: never sent by a server
    }
  }

  /** The connection is LIVE: send presence, start the backoff over (spec §6). */
  private live (): void {
    if (this.synced) return
    this.synced = true
    this.delays = this.makeDelays()
    if (this.awareness.getLocalState() !== null) {
      this.send(awarenessMessage(this.awareness, [this.awareness.clientID]))
    }
    this.emit('synced', [{ synced: true }])
  }

  private answer (stateVector: Uint8Array): void {
    const update = Y.encodeStateAsUpdate(this._doc, stateVector)
    this.document({ type: 'SyncStep2', update })
  }

  /** Send a document-bearing message, numbered for ACK (spec §4.2); `version`: its edits. */
  private document (message: Message, version?: number): void {
    this.edits.numberMessage(version)
    this.send(encode(message))
  }

  private acknowledged (seq: number): void {
    if (this.edits.acknowledged(seq)) this.saveOffline()
  }

  /** Unacknowledged edits, merged into one update: the server may have lost them (§4.3). */
  private resend (): void {
    const kept = this.edits.resend()
    if (kept !== null) this.document({ type: 'SyncUpdate', update: kept.update }, kept.version)
  }

  // -- local edits ----------------------------------------------------------------------------

  private localEdit (update: Uint8Array): void {
    const version = this.edits.record(update)
    if (this.caughtUp && this.ws !== null) this.document({ type: 'SyncUpdate', update }, version)
    this.saveOffline()
  }

  /**
   * The history was reset (spec §4.6): this document belongs to a history that no longer
   * exists. Start from a new Y.Doc holding `update` (not merged) and drop the unacknowledged
   * edits with the old one: merging them would bring the old history back.
   */
  private async replaceDoc (update: Uint8Array): Promise<void> {
    const old = this._doc
    old.off('update', this.onDocUpdate)
    const doc = new Y.Doc({ gc: old.gc })
    Y.applyUpdate(doc, update, this)
    this._doc = doc
    this.edits.dropAll()
    this.resets++
    if (this.offline !== null) await this.offline.replace(doc)
    doc.on('update', this.onDocUpdate)
    this.emit('reset', [{ doc }])
  }

  // -- pending edits and the offline copy -------------------------------------------------------

  private emitSaved (): void {
    this.emit('saved', [{ pending: this.reportedPending, acksPaused: this.acksPaused }])
  }

  private report (pending: number): void {
    if (pending === this.reportedPending) return
    this.reportedPending = pending
    this.emitSaved()
  }

  /**
   * Store the unacknowledged edits and the position, then report the pending count: an edit is
   * reported pending only once it is in IndexedDB (writes are coalesced, one at a time).
   */
  private saveOffline (): void {
    if (this.offlineName === null) {
      this.report(this.edits.pending)
      return
    }
    const store = this.offline
    if (store === null || this.saveQueued) return // reported once the copy is open
    this.saveQueued = true
    this.saving = this.saving.then(async () => {
      this.saveQueued = false
      const version = this.edits.localVersion
      try {
        await store.save({ epoch: this.epoch, offset: this.offset, unacked: this.edits.updates() })
        if (this.adopting) {
          this.adopting = false
          await store.forgetAdopted() // their edits are in this tab's record now
        }
      } catch (error) {
        this.emit('error', [{ error: asError(error) }])
      }
      this.report(this.edits.pendingUpTo(version)) // the edits this write stored
    })
  }

  /** Open the offline copy; adopt the edits and position of tabs that are gone (a reload). */
  private async loadOffline (name: string): Promise<void> {
    const store = new OfflineStore(name, this._doc, String(this._doc.clientID))
    this.offline = store // its origin marks the stored content it applies: not local edits
    const adopted = await store.load()
    if (this.destroyed) return
    if (adopted.length > 0) {
      const latest = adopted.reduce((a, b) =>
        b.epoch > a.epoch || (b.epoch === a.epoch && b.offset > a.offset) ? b : a)
      this.epoch = latest.epoch
      this.offset = latest.offset
      // Their edits come first, numbered before those this page made while the copy opened.
      const loaded = adopted.flatMap((record) => record.unacked)
      this.edits.prepend(loaded)
      Y.transact(this._doc, () => {
        for (const update of loaded) Y.applyUpdate(this._doc, update)
      }, this)
      this.adopting = true
    }
    this.saveOffline()
  }
}

function awarenessMessage (awareness: awarenessProtocol.Awareness, clients: number[]): Uint8Array {
  const payload = awarenessProtocol.encodeAwarenessUpdate(awareness, clients)
  return encode({ type: 'AwarenessUpdate', payload })
}

function asError (error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}
