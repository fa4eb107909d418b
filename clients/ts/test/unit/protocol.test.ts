// The SDK's codec against proto/vectors/messages.json: the vectors the Python protocol package
// (tests/proto/test_codec.py) and the gateway run.
import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'

import {
  ProtocolError, decode, decodeAwareness, decodeServerMessage, encode, encodeAwareness,
  type Message, type ProtocolErrorKind, Reader, Writer
} from '../../src/protocol.js'

interface Vector {
  name: string
  sender: 'client' | 'server' | 'any'
  hex: string
  decoded?: Record<string, any>
  error?: ProtocolErrorKind
}

const VECTORS: Vector[] = JSON.parse(
  readFileSync(new URL('../../../../proto/vectors/messages.json', import.meta.url), 'utf-8'))
const VALID = VECTORS.filter((v) => v.decoded !== undefined)
const INVALID = VECTORS.filter((v) => v.error !== undefined)

const fromHex = (hex: string): Uint8Array => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16))
const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')

/** The message a vector's `decoded` object describes (proto/vectors/README.md). */
function toMessage (d: Record<string, any>): Message {
  switch (d.type) {
    case 'SyncStep1': return { type: 'SyncStep1', stateVector: fromHex(d.state_vector) }
    case 'SyncStep2': return { type: 'SyncStep2', update: fromHex(d.update) }
    case 'SyncUpdate': return { type: 'SyncUpdate', update: fromHex(d.update) }
    case 'AwarenessUpdate': return { type: 'AwarenessUpdate', payload: fromHex(d.payload) }
    case 'Auth': return { type: 'Auth', authType: d.auth_type, text: d.text }
    case 'QueryAwareness': return { type: 'QueryAwareness' }
    case 'Hello': return { type: 'Hello', version: d.version, features: d.features }
    case 'Ack': return { type: 'Ack', seq: d.seq }
    case 'Reject': return { type: 'Reject', seq: d.seq, field: d.field, reason: d.reason }
    case 'Drain': return { type: 'Drain', retryMs: d.retry_ms }
    case 'Status': return { type: 'Status', flags: d.flags }
    case 'Resume': return { type: 'Resume', epoch: d.epoch, offset: d.offset, stateVector: fromHex(d.state_vector) }
    case 'CatchUp': return { type: 'CatchUp', epoch: d.epoch, offset: d.offset, flags: d.flags, update: fromHex(d.update) }
    case 'Position': return { type: 'Position', epoch: d.epoch, offset: d.offset }
  }
  throw new Error(`unknown decoded type ${String(d.type)}`)
}

function decodersFor (sender: Vector['sender']): Array<(data: Uint8Array) => Message> {
  if (sender === 'client') return [decode]
  if (sender === 'server') return [decodeServerMessage]
  return [decode, decodeServerMessage]
}

/** Plain values, so Uint8Array views of one buffer compare by content. */
const plain = (message: Message): unknown =>
  JSON.parse(JSON.stringify(message, (_, v) => v instanceof Uint8Array ? toHex(v) : v))

describe('the vectors file', () => {
  test('covers every message type and every error category', () => {
    expect(new Set(VALID.map((v) => v.decoded?.type)).size).toBe(14)
    expect(new Set(INVALID.map((v) => v.error))).toEqual(new Set([
      'truncated', 'varuint_too_long', 'varuint_too_large', 'length_exceeds_message',
      'trailing_bytes', 'unknown_type', 'unknown_sync_type', 'server_only', 'invalid_utf8',
      'invalid_state_vector'
    ]))
  })
})

describe.each(VALID.map((v) => [v.name, v] as const))('valid vector %s', (_, vector) => {
  test('decodes to its decoded value', () => {
    const expected = plain(toMessage(vector.decoded ?? {}))
    for (const decoder of decodersFor(vector.sender)) {
      expect(plain(decoder(fromHex(vector.hex)))).toEqual(expected)
    }
  })

  test('re-encodes to the same bytes', () => {
    expect(toHex(encode(toMessage(vector.decoded ?? {})))).toBe(vector.hex)
  })

  if (vector.sender === 'server') {
    test('is refused from a client (server_only)', () => {
      expect(() => decode(fromHex(vector.hex))).toThrow(expect.objectContaining({ kind: 'server_only' }))
    })
  }

  if (vector.decoded?.type === 'AwarenessUpdate') {
    test('payload decodes to its entries', () => {
      const entries = (vector.decoded?.entries as any[]).map((e) => ({ clientId: e.client_id, clock: e.clock, state: e.state }))
      const payload = fromHex(vector.decoded?.payload)
      expect(decodeAwareness(payload)).toEqual(entries)
      expect(toHex(encodeAwareness(entries))).toBe(vector.decoded?.payload)
    })
  }
})

describe.each(INVALID.map((v) => [v.name, v] as const))('invalid vector %s', (_, vector) => {
  test(`is refused as ${vector.error ?? ''}`, () => {
    for (const decoder of decodersFor(vector.sender)) {
      let caught: unknown
      try {
        decoder(fromHex(vector.hex))
      } catch (error) {
        caught = error
      }
      expect(caught).toBeInstanceOf(ProtocolError)
      expect((caught as ProtocolError).kind).toBe(vector.error)
      expect((caught as ProtocolError).closeCode).toBe(4500)
    }
  })
})

describe('varUint', () => {
  test.each([
    [0, '00'], [127, '7f'], [128, '8001'], [300, 'ac02'], [16_383, 'ff7f'], [16_384, '808001'],
    [2 ** 32 - 1, 'ffffffff0f'], [2 ** 53 - 1, 'ffffffffffffff0f']
  ])('%d encodes as lib0 does (%s)', (value, hex) => {
    expect(toHex(new Writer().writeVarUint(value).toBytes())).toBe(hex)
    const reader = new Reader(fromHex(hex))
    expect(reader.readVarUint()).toBe(value)
    expect(reader.remaining).toBe(0)
  })

  test('ten bytes holding a small value are accepted', () => {
    expect(new Reader(Uint8Array.from([0x81, ...Array(8).fill(0x80), 0x00])).readVarUint()).toBe(1)
  })
})

describe('fuzzing', () => {
  test('arbitrary bytes decode or raise ProtocolError, never anything else', () => {
    let seed = 42
    const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
    const samples = VECTORS.map((v) => fromHex(v.hex))
    for (let i = 0; i < 5000; i++) {
      const base = samples[Math.floor(random() * samples.length)]
      const data = Uint8Array.from(base)
      if (data.length > 0) data[Math.floor(random() * data.length)] = Math.floor(random() * 256)
      const cut = random() < 0.3 ? data.subarray(0, Math.floor(random() * (data.length + 1))) : data
      for (const decoder of [decode, decodeServerMessage]) {
        try {
          const message = decoder(cut)
          expect(plain(decoder(encode(message)))).toEqual(plain(message))
        } catch (error) {
          expect(error).toBeInstanceOf(ProtocolError)
        }
      }
    }
  })
})
