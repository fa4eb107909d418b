// The shared socket's framing (src/mux.ts) against proto/vectors/mux.json, the vectors the
// Python protocol package runs too (tests/proto/test_mux.py).
import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'

import { frameForMux } from '../../src/mux.js'

interface Vector { name: string, sender: string, hex: string, ws_hex?: string, document?: string }

const VECTORS: Vector[] = JSON.parse(
  readFileSync(new URL('../../../../proto/vectors/mux.json', import.meta.url), 'utf-8'))
const FRAMED = VECTORS.filter((v) => v.ws_hex !== undefined)

const fromHex = (hex: string): Uint8Array => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16))
const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')

describe('frameForMux', () => {
  test('there are vectors to frame', () => { expect(FRAMED.length).toBeGreaterThanOrEqual(4) })
  test.each(FRAMED)('$name', (vector) => {
    expect(toHex(frameForMux(vector.document ?? '', fromHex(vector.ws_hex ?? '')))).toBe(vector.hex)
  })
})
