/**
 * WedsyncSocket: one WebSocket to the gateway's `/mux` (proto/spec.md §10) shared by many
 * WedsyncProviders, one per wedding. Each provider keeps its own ACKs, REJECTs, resume position
 * and unacknowledged edits exactly as over `/ws`: the socket gives each one a *channel*, an
 * object with the WebSocket API (`WebSocketLike`) that frames the provider's messages with its
 * wedding's name and unwraps what the server sends for it. The extension messages travel as
 * `wedsync:` stateless messages (§10.5); a permission-denied at opening closes that channel
 * only, with 4503, and a server's close of an open wedding with the code its reason starts with
 * (4401 revoked, 1013 overloaded, ...), so the provider's close-code rules (§6) apply per wedding. When the socket itself closes, every channel closes with its
 * code and each provider reconnects on its own backoff; the socket reconnects on their demand.
 *
 *     const socket = new WedsyncSocket('ws://HOST/mux', { token, WebSocketPolyfill: WebSocket })
 *     const a = new WedsyncProvider('', 'wed-1', new Y.Doc(), { socket })
 *     const b = new WedsyncProvider('', 'wed-2', new Y.Doc(), { socket })
 */

import { DEFAULT_LIVENESS, Liveness, abandon, silenceReason, type LivenessOptions } from './liveness.js'
import { defaultPlatform, withPlatform, type Platform } from './platform.js'
import { Reader, Writer } from './protocol.js'
import { CloseCode, type WebSocketConstructor, type WebSocketLike } from './socket.js'
import { TokenKeeper, type TokenSource } from './token.js'

/** The varUint after the wedding name on `/mux` (spec §10.1). */
export const MuxType = {
  SYNC: 0,
  AWARENESS: 1,
  AUTH: 2,
  QUERY_AWARENESS: 3,
  STATELESS: 5,
  CLOSE: 7,
  SYNC_STATUS: 8,
  PING: 9,
  PONG: 10
} as const

export const MuxAuthType = { TOKEN: 0, PERMISSION_DENIED: 1, AUTHENTICATED: 2 } as const
export const EXTENSION_PREFIX = 'wedsync:'
const AUTH = 2 // the /ws message type of an auth message
const FIRST_EXTENSION = 100

export interface WedsyncSocketOptions {
  /** The default token of every wedding whose provider has none of its own. */
  token?: TokenSource
  /** Declared as `?platform=` (spec §1), as `WedsyncProviderOptions.platform`. */
  platform?: Platform
  WebSocketPolyfill?: WebSocketConstructor | (new (url: string, ...rest: any[]) => unknown)
  /** A socket silent for `idleMs` (default 25 s; the server pings every 10 s) is probed; if
   * nothing arrives within `answerMs` (10 s) it is dropped: every channel closes with 1006 and
   * its provider reconnects over a new socket. `idleMs: 0`: off. */
  liveness?: Partial<LivenessOptions>
}

function prefixed (name: string, body: Uint8Array): Uint8Array {
  const head = new Writer().writeVarString(name).toBytes()
  const out = new Uint8Array(head.length + body.length)
  out.set(head, 0)
  out.set(body, head.length)
  return out
}

function base64 (data: Uint8Array): string {
  let text = ''
  for (const byte of data) text += String.fromCharCode(byte)
  return btoa(text)
}

function unbase64 (text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
}

/** The `/mux` form of one `/ws` message a provider sends for wedding `name`. */
export function frameForMux (name: string, data: Uint8Array): Uint8Array {
  if (data[0] === AUTH) { // y-protocols auth, type 1 token → Hocuspocus auth, type 0 token
    const reader = new Reader(data)
    reader.readVarUint()
    reader.readVarUint()
    const token = reader.readVarString()
    const body = new Writer().writeVarUint(MuxType.AUTH).writeVarUint(MuxAuthType.TOKEN)
      .writeVarString(token).toBytes()
    return prefixed(name, body)
  }
  if (data[0] >= FIRST_EXTENSION) {
    const body = new Writer().writeVarUint(MuxType.STATELESS)
      .writeVarString(EXTENSION_PREFIX + base64(data)).toBytes()
    return prefixed(name, body)
  }
  return prefixed(name, data)
}

type Listener = ((event: any) => void) | null

/** One wedding's view of the shared socket, with the WebSocket API the provider uses. */
export class MuxChannel implements WebSocketLike {
  binaryType = 'arraybuffer'
  readyState = 0
  onopen: Listener = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number, reason: string }) => void) | null = null
  onerror: Listener = null
  /** The server answered `authenticated` for this wedding. */
  authenticated = false
  /** The provider sent its token first: the socket's default token is not needed. */
  private opened = false

  constructor (readonly socket: WedsyncSocket, readonly name: string) {}

  send (data: Uint8Array): void {
    if (this.readyState !== 1) return
    if (!this.opened) {
      this.opened = true
      if (data[0] !== AUTH) this.socket.openWith(this.name) // the socket's token, or none
    }
    this.socket.sendRaw(frameForMux(this.name, data))
  }

  close (code: number = CloseCode.NORMAL, reason = ''): void {
    if (this.readyState >= 2) return
    this.socket.sendRaw(prefixed(this.name, Uint8Array.of(MuxType.CLOSE)))
    this.closed(code, reason)
  }

  /** @internal */
  opening (): void {
    if (this.readyState !== 0) return
    this.readyState = 1
    this.onopen?.({})
  }

  /** @internal */
  deliver (data: Uint8Array): void {
    if (this.readyState !== 1) return
    const copy = data.slice() // an ArrayBuffer of its own, as a WebSocket's message event has
    this.onmessage?.({ data: copy.buffer })
  }

  /** @internal */
  closed (code: number, reason: string): void {
    if (this.readyState >= 3) return
    this.readyState = 3
    this.socket.forget(this)
    queueMicrotask(() => this.onclose?.({ code, reason }))
  }
}

/** One `/mux` WebSocket shared by many providers (pass it as their `socket` option). */
export class WedsyncSocket {
  readonly url: string
  /** Declared on each connection as `?platform=` (spec §1). */
  readonly platform: Platform
  /** WebSocket connections opened so far. */
  connections = 0
  /** The last close of the shared socket. */
  lastClose: { code: number, reason: string } | null = null
  private readonly WebSocketClass: WebSocketConstructor
  private readonly tokens: TokenKeeper
  private ws: WebSocketLike | null = null
  private token: string | null = null
  private ready = false
  private readonly channels = new Map<string, MuxChannel>()
  private readonly liveness: Liveness

  constructor (url: string, options: WedsyncSocketOptions = {}) {
    this.url = url
    this.platform = options.platform ?? defaultPlatform()
    const WS = (options.WebSocketPolyfill ?? globalThis.WebSocket) as WebSocketConstructor | undefined
    if (WS === undefined) throw new TypeError('no WebSocket: pass WebSocketPolyfill (Node: ws)')
    this.WebSocketClass = WS
    this.tokens = new TokenKeeper(options.token, 60_000)
    this.liveness = new Liveness(
      { ...DEFAULT_LIVENESS, ...options.liveness },
      () => { this.probe() },
      (silentMs) => { this.dead(silentMs) }
    )
  }

  /** The WebSocket class a provider uses for `weddingId`: it opens a channel of this socket. */
  channelClass (weddingId: string): WebSocketConstructor {
    const socket = this
    return class {
      constructor () {
        return socket.channel(weddingId)
      }
    } as unknown as WebSocketConstructor
  }

  /** A new channel for `name` (the previous one, if any, is closed). */
  channel (name: string): MuxChannel {
    this.channels.get(name)?.closed(CloseCode.NORMAL, 'replaced')
    const channel = new MuxChannel(this, name)
    this.channels.set(name, channel)
    if (this.ready) {
      queueMicrotask(() => channel.opening())
    } else {
      this.connect()
    }
    return channel
  }

  /** Close the shared socket; every channel closes with 1000 (providers reconnect). */
  close (): void {
    this.liveness.stop()
    this.ws?.close(CloseCode.NORMAL, 'the client closed the socket')
  }

  /** @internal */
  forget (channel: MuxChannel): void {
    if (this.channels.get(channel.name) === channel) this.channels.delete(channel.name)
  }

  /** @internal: open `name` with the socket's token (a provider without a token of its own). */
  openWith (name: string): void {
    const body = new Writer().writeVarUint(MuxType.AUTH).writeVarUint(MuxAuthType.TOKEN)
      .writeVarString(this.token ?? '').toBytes()
    this.sendRaw(prefixed(name, body))
  }

  /** @internal */
  sendRaw (data: Uint8Array): void {
    if (this.ws !== null && this.ws.readyState === 1) this.ws.send(data)
  }

  private connect (): void {
    if (this.ws !== null) return
    const ws = new this.WebSocketClass(withPlatform(this.url, this.platform))
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    ws.onopen = () => {
      if (this.ws !== ws) return
      this.connections++
      this.liveness.start()
      void this.tokens.current().then((token) => {
        if (this.ws !== ws) return
        this.token = token
        this.ready = true
        for (const channel of this.channels.values()) channel.opening()
      }, () => { ws.close(CloseCode.NORMAL, 'no token') })
    }
    ws.onmessage = (event) => {
      if (this.ws !== ws || !(event.data instanceof ArrayBuffer)) return
      this.liveness.heard()
      this.receive(new Uint8Array(event.data))
    }
    ws.onclose = (event) => {
      if (this.ws === ws) this.lost(event.code, event.reason)
    }
    ws.onerror = () => {} // a close event follows
  }

  private lost (code: number, reason: string): void {
    this.ws = null
    this.ready = false
    this.liveness.stop()
    this.lastClose = { code, reason }
    for (const channel of [...this.channels.values()]) channel.closed(code, reason)
  }

  /** Ask for a sign of life now (the server's next ping would do too): a query-awareness of
   * one open wedding, which the server always answers (spec §2.5). */
  private probe (): void {
    const name = this.channels.keys().next().value
    if (name !== undefined) this.sendRaw(prefixed(name, Uint8Array.of(MuxType.QUERY_AWARENESS)))
  }

  /** Nothing answered the probe: the socket is half-open. Let go of it now (its close
   * handshake could take minutes); the providers reconnect, over a new socket. */
  private dead (silentMs: number): void {
    const ws = this.ws
    if (ws === null) return
    this.lost(CloseCode.ABNORMAL, silenceReason(silentMs))
    abandon(ws)
  }

  private receive (data: Uint8Array): void {
    if (data.length === 1 && data[0] === MuxType.PING) {
      this.sendRaw(Uint8Array.of(MuxType.PONG))
      return
    }
    const reader = new Reader(data)
    const name = reader.readVarString()
    const channel = this.channels.get(name)
    if (channel === undefined) return
    const body = data.subarray(reader.pos)
    const kind = reader.readVarUint()
    switch (kind) {
      case MuxType.SYNC:
      case MuxType.AWARENESS:
        channel.deliver(body)
        break
      case MuxType.STATELESS: {
        const payload = reader.readVarString()
        if (payload.startsWith(EXTENSION_PREFIX)) {
          channel.deliver(unbase64(payload.slice(EXTENSION_PREFIX.length)))
        }
        break
      }
      case MuxType.AUTH: {
        const authType = reader.readVarUint()
        const text = reader.readVarString()
        if (authType === MuxAuthType.PERMISSION_DENIED && !channel.authenticated) {
          channel.closed(CloseCode.FORBIDDEN, text) // refused at opening: terminal (§6)
        } else if (authType === MuxAuthType.AUTHENTICATED) {
          channel.authenticated = true
        }
        break
      }
      case MuxType.CLOSE: {
        // an open wedding closed: the reason starts with its §6 close code (spec §10.3)
        const reason = reader.remaining > 0 ? reader.readVarString() : ''
        const match = /^(\d{4}) (.*)$/s.exec(reason)
        if (match !== null) channel.closed(Number(match[1]), match[2])
        else channel.closed(CloseCode.UNAUTHORIZED, reason)
        break
      }
      default:
        break // SYNC_STATUS: the provider counts its ACKs instead
    }
  }
}
