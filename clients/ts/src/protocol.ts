/**
 * Messages of the y-websocket protocol and of the WedSync extensions, with a bounded codec
 * (proto/spec.md §2–§4). No I/O. Every read checks that the bytes it needs are present and every
 * message must be consumed exactly: the same rules as proto/python/wedsync_protocol/codec.py,
 * proven by the same vectors (proto/vectors/messages.json).
 */

/** First varUint of every message (spec §2.2); the values are the wire values. */
export const MessageType = {
  SYNC: 0,
  AWARENESS: 1,
  AUTH: 2,
  QUERY_AWARENESS: 3,
  // 100–127: WedSync extensions, sent only to clients that said HELLO (spec §4).
  HELLO: 100,
  ACK: 101,
  REJECT: 102,
  DRAIN: 103,
  RESUME: 104,
  CATCH_UP: 105,
  POSITION: 106,
  STATUS: 107
} as const

/** Second varUint of a sync message. */
export const SyncType = { STEP1: 0, STEP2: 1, UPDATE: 2 } as const

/** Extension features a client asks for in HELLO (spec §4.1); a bit set. */
export const Feature = { ACKS: 1, REJECTS: 2, RESUME: 4, GZIP: 8 } as const
/** Every feature bit this version knows; others in a HELLO are ignored. */
export const ALL_FEATURES = Feature.ACKS | Feature.REJECTS | Feature.RESUME | Feature.GZIP

export const EXTENSION_VERSION = 1
/** Auth type, server → client: the text says why access was denied (y-protocols). */
export const AUTH_PERMISSION_DENIED = 0
/** Auth type, client → server: the text is a token (spec §2.4). */
export const AUTH_TOKEN = 1
/** CATCH_UP flag: the wedding's history was reset; replace the document (spec §4.6). */
export const CATCH_UP_RESET = 1
/** CATCH_UP flag: the update is gzip-compressed (RFC 1952). */
export const CATCH_UP_GZIP = 2
/** STATUS flag: the node cannot make updates durable now; ACKs follow later (spec §4.7). */
export const STATUS_ACKS_PAUSED = 1

/** The update with no structs and an empty delete set. */
export const EMPTY_UPDATE = new Uint8Array([0, 0])

export type Message =
  | { type: 'SyncStep1', stateVector: Uint8Array }
  | { type: 'SyncStep2', update: Uint8Array }
  | { type: 'SyncUpdate', update: Uint8Array }
  | { type: 'AwarenessUpdate', payload: Uint8Array }
  | { type: 'Auth', authType: number, text: string }
  | { type: 'QueryAwareness' }
  | { type: 'Hello', version: number, features: number }
  | { type: 'Ack', seq: number }
  | { type: 'Reject', seq: number, field: string, reason: string }
  | { type: 'Drain', retryMs: number }
  | { type: 'Resume', epoch: number, offset: number, stateVector: Uint8Array }
  | { type: 'CatchUp', epoch: number, offset: number, flags: number, update: Uint8Array }
  | { type: 'Position', epoch: number, offset: number }
  | { type: 'Status', flags: number }

/** One client's presence in an awareness update: `state` is JSON text, `"null"` when it left. */
export interface AwarenessEntry {
  clientId: number
  clock: number
  state: string
}

/** Why bytes are not a valid message: the categories of proto/vectors/README.md. */
export type ProtocolErrorKind =
  | 'truncated'
  | 'varuint_too_long'
  | 'varuint_too_large'
  | 'length_exceeds_message'
  | 'trailing_bytes'
  | 'unknown_type'
  | 'unknown_sync_type'
  | 'server_only'
  | 'invalid_utf8'
  | 'invalid_state_vector'

/** The peer broke proto/spec.md; a server closes with 4500 (terminal). */
export class ProtocolError extends Error {
  readonly kind: ProtocolErrorKind
  readonly closeCode = 4500

  constructor (kind: ProtocolErrorKind, message: string) {
    super(message)
    this.name = 'ProtocolError'
    this.kind = kind
  }
}

const MAX_VARUINT_BYTES = 10
const utf8 = new TextDecoder('utf-8', { fatal: true })
const utf8Encoder = new TextEncoder()

/** Reads lib0 encodings from `data`; every read is bounded by what remains. */
export class Reader {
  readonly data: Uint8Array
  pos = 0

  constructor (data: Uint8Array) {
    this.data = data
  }

  get remaining (): number {
    return this.data.length - this.pos
  }

  /** A lib0 varUint: at most 10 bytes, at most 2^53 − 1 (spec §2.1). */
  readVarUint (): number {
    const { data } = this
    let pos = this.pos
    let result = 0
    let scale = 1
    const end = Math.min(data.length, pos + MAX_VARUINT_BYTES)
    while (pos < end) {
      const byte = data[pos++]
      result += (byte & 0x7f) * scale // multiplication: bit operators stop at 32 bits
      if (byte < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) {
          throw new ProtocolError('varuint_too_large', `varUint ${result} is above 2^53 - 1`)
        }
        this.pos = pos
        return result
      }
      scale *= 128
    }
    if (end === data.length) throw new ProtocolError('truncated', 'message ends inside a varUint')
    throw new ProtocolError('varuint_too_long', `varUint longer than ${MAX_VARUINT_BYTES} bytes`)
  }

  readBytes (n: number): Uint8Array {
    if (n > this.remaining) {
      throw new ProtocolError(
        'length_exceeds_message', `length prefix ${n} exceeds the ${this.remaining} bytes left`)
    }
    const start = this.pos
    this.pos = start + n
    return this.data.subarray(start, this.pos)
  }

  /** A varUint length, then that many bytes. */
  readVarBytes (): Uint8Array {
    return this.readBytes(this.readVarUint())
  }

  readVarString (): string {
    const raw = this.readVarBytes()
    try {
      return utf8.decode(raw)
    } catch {
      throw new ProtocolError('invalid_utf8', 'string is not valid UTF-8')
    }
  }

  expectEnd (what: string): void {
    if (this.pos !== this.data.length) {
      throw new ProtocolError('trailing_bytes', `${this.remaining} trailing bytes after ${what}`)
    }
  }
}

/** Builds one message from lib0 encodings. */
export class Writer {
  private readonly parts: number[] = []
  private readonly chunks: Uint8Array[] = []
  private length = 0

  writeVarUint (n: number): this {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a varUint: ${n}`)
    while (n >= 0x80) {
      this.parts.push((n % 0x80) | 0x80)
      n = Math.floor(n / 0x80)
    }
    this.parts.push(n)
    return this
  }

  writeVarBytes (bytes: Uint8Array): this {
    this.writeVarUint(bytes.length)
    this.flushParts()
    this.chunks.push(bytes)
    this.length += bytes.length
    return this
  }

  writeVarString (text: string): this {
    return this.writeVarBytes(utf8Encoder.encode(text))
  }

  toBytes (): Uint8Array {
    this.flushParts()
    if (this.chunks.length === 1) return this.chunks[0]
    const out = new Uint8Array(this.length)
    let at = 0
    for (const chunk of this.chunks) {
      out.set(chunk, at)
      at += chunk.length
    }
    return out
  }

  private flushParts (): void {
    if (this.parts.length === 0) return
    this.chunks.push(Uint8Array.from(this.parts))
    this.length += this.parts.length
    this.parts.length = 0
  }
}

const SERVER_ONLY: ReadonlySet<number> = new Set([
  MessageType.ACK, MessageType.REJECT, MessageType.DRAIN,
  MessageType.STATUS, MessageType.CATCH_UP, MessageType.POSITION
])

/** Decode one message a client sent (what a server reads); throws ProtocolError. */
export function decode (data: Uint8Array): Message {
  const reader = new Reader(data)
  const kind = reader.readVarUint()
  let message: Message
  switch (kind) {
    case MessageType.SYNC:
      message = decodeSync(reader)
      break
    case MessageType.AWARENESS:
      message = { type: 'AwarenessUpdate', payload: reader.readVarBytes() }
      break
    case MessageType.QUERY_AWARENESS:
      message = { type: 'QueryAwareness' }
      break
    case MessageType.AUTH:
      message = { type: 'Auth', authType: reader.readVarUint(), text: reader.readVarString() }
      break
    case MessageType.HELLO:
      message = {
        type: 'Hello', version: reader.readVarUint(), features: reader.readVarUint() & ALL_FEATURES
      }
      break
    case MessageType.RESUME: {
      const epoch = reader.readVarUint()
      const offset = reader.readVarUint()
      const stateVector = reader.readVarBytes()
      checkStateVector(stateVector)
      message = { type: 'Resume', epoch, offset, stateVector }
      break
    }
    default:
      if (SERVER_ONLY.has(kind)) {
        throw new ProtocolError('server_only', `message type ${kind} is sent by the server only`)
      }
      throw new ProtocolError('unknown_type', `unknown message type ${kind}`)
  }
  reader.expectEnd(message.type)
  return message
}

/** Decode one message a server sent (what this client reads); throws ProtocolError. */
export function decodeServerMessage (data: Uint8Array): Message {
  const reader = new Reader(data)
  const kind = reader.readVarUint()
  let message: Message
  switch (kind) {
    case MessageType.ACK:
      message = { type: 'Ack', seq: reader.readVarUint() }
      break
    case MessageType.REJECT:
      message = {
        type: 'Reject',
        seq: reader.readVarUint(),
        field: reader.readVarString(),
        reason: reader.readVarString()
      }
      break
    case MessageType.DRAIN:
      message = { type: 'Drain', retryMs: reader.readVarUint() }
      break
    case MessageType.STATUS:
      message = { type: 'Status', flags: reader.readVarUint() }
      break
    case MessageType.CATCH_UP:
      message = {
        type: 'CatchUp',
        epoch: reader.readVarUint(),
        offset: reader.readVarUint(),
        flags: reader.readVarUint(),
        update: reader.readVarBytes()
      }
      break
    case MessageType.POSITION:
      message = { type: 'Position', epoch: reader.readVarUint(), offset: reader.readVarUint() }
      break
    default:
      return decode(data)
  }
  reader.expectEnd(message.type)
  return message
}

function decodeSync (reader: Reader): Message {
  const syncType = reader.readVarUint()
  const payload = reader.readVarBytes()
  switch (syncType) {
    case SyncType.STEP1:
      checkStateVector(payload)
      return { type: 'SyncStep1', stateVector: payload }
    case SyncType.STEP2:
      return { type: 'SyncStep2', update: payload }
    case SyncType.UPDATE:
      return { type: 'SyncUpdate', update: payload }
    default:
      throw new ProtocolError('unknown_sync_type', `unknown sync message type ${syncType}`)
  }
}

/** Check that `data` is exactly one encoded state vector (count, then client/clock pairs). */
export function checkStateVector (data: Uint8Array): void {
  const reader = new Reader(data)
  try {
    const count = reader.readVarUint()
    if (count * 2 > reader.remaining) {
      throw new ProtocolError('invalid_state_vector',
        `state vector claims ${count} clients in ${reader.remaining} bytes`)
    }
    for (let i = 0; i < count; i++) {
      reader.readVarUint()
      reader.readVarUint()
    }
    if (reader.remaining !== 0) {
      throw new ProtocolError('invalid_state_vector',
        `${reader.remaining} trailing bytes after the state vector`)
    }
  } catch (error) {
    if (error instanceof ProtocolError && error.kind !== 'invalid_state_vector') {
      throw new ProtocolError('invalid_state_vector', `invalid state vector: ${error.message}`)
    }
    throw error
  }
}

/** Decode the entries of an awareness update (spec §2.3). */
export function decodeAwareness (payload: Uint8Array, maxEntries = 64): AwarenessEntry[] {
  const reader = new Reader(payload)
  const count = reader.readVarUint()
  if (count > maxEntries) {
    throw new ProtocolError('length_exceeds_message',
      `awareness update has ${count} entries; the limit is ${maxEntries}`)
  }
  if (count * 3 > reader.remaining) {
    throw new ProtocolError('length_exceeds_message',
      `awareness update claims ${count} entries in ${reader.remaining} bytes`)
  }
  const entries: AwarenessEntry[] = []
  for (let i = 0; i < count; i++) {
    entries.push({
      clientId: reader.readVarUint(), clock: reader.readVarUint(), state: reader.readVarString()
    })
  }
  reader.expectEnd('awareness update')
  return entries
}

export function encodeAwareness (entries: readonly AwarenessEntry[]): Uint8Array {
  const writer = new Writer().writeVarUint(entries.length)
  for (const entry of entries) {
    writer.writeVarUint(entry.clientId).writeVarUint(entry.clock).writeVarString(entry.state)
  }
  return writer.toBytes()
}

/** Encode one message for the wire. */
export function encode (message: Message): Uint8Array {
  const w = new Writer()
  switch (message.type) {
    case 'SyncStep1':
      return w.writeVarUint(MessageType.SYNC).writeVarUint(SyncType.STEP1)
        .writeVarBytes(message.stateVector).toBytes()
    case 'SyncStep2':
      return w.writeVarUint(MessageType.SYNC).writeVarUint(SyncType.STEP2)
        .writeVarBytes(message.update).toBytes()
    case 'SyncUpdate':
      return w.writeVarUint(MessageType.SYNC).writeVarUint(SyncType.UPDATE)
        .writeVarBytes(message.update).toBytes()
    case 'AwarenessUpdate':
      return w.writeVarUint(MessageType.AWARENESS).writeVarBytes(message.payload).toBytes()
    case 'Auth':
      return w.writeVarUint(MessageType.AUTH).writeVarUint(message.authType)
        .writeVarString(message.text).toBytes()
    case 'QueryAwareness':
      return w.writeVarUint(MessageType.QUERY_AWARENESS).toBytes()
    case 'Hello':
      return w.writeVarUint(MessageType.HELLO).writeVarUint(message.version)
        .writeVarUint(message.features).toBytes()
    case 'Ack':
      return w.writeVarUint(MessageType.ACK).writeVarUint(message.seq).toBytes()
    case 'Reject':
      return w.writeVarUint(MessageType.REJECT).writeVarUint(message.seq)
        .writeVarString(message.field).writeVarString(message.reason).toBytes()
    case 'Drain':
      return w.writeVarUint(MessageType.DRAIN).writeVarUint(message.retryMs).toBytes()
    case 'Resume':
      return w.writeVarUint(MessageType.RESUME).writeVarUint(message.epoch)
        .writeVarUint(message.offset).writeVarBytes(message.stateVector).toBytes()
    case 'CatchUp':
      return w.writeVarUint(MessageType.CATCH_UP).writeVarUint(message.epoch)
        .writeVarUint(message.offset).writeVarUint(message.flags)
        .writeVarBytes(message.update).toBytes()
    case 'Position':
      return w.writeVarUint(MessageType.POSITION).writeVarUint(message.epoch)
        .writeVarUint(message.offset).toBytes()
    case 'Status':
      return w.writeVarUint(MessageType.STATUS).writeVarUint(message.flags).toBytes()
    default: {
      const never: never = message
      throw new TypeError(`unknown message ${JSON.stringify(never)}`)
    }
  }
}
