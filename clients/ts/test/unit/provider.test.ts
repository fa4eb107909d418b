// WedsyncProvider against a scripted socket: what it sends when, which close codes reconnect and
// after how long (fake timers: nothing sleeps), ACK bookkeeping, CATCH_UP with gzip and RESET.
import { gzipSync } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest'
import * as Y from 'yjs'

import { WedsyncProvider, type WedsyncProviderOptions } from '../../src/index.js'
import { decode, encode, type Message } from '../../src/protocol.js'

class FakeSocket {
  static all: FakeSocket[] = []
  binaryType = 'blob'
  readyState = 0
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number, reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null
  readonly sent: Message[] = []

  constructor (readonly url: string) {
    FakeSocket.all.push(this)
  }

  send (data: Uint8Array): void {
    this.sent.push(decode(data))
  }

  close (code = 1000, reason = ''): void {
    this.serverClose(code, reason)
  }

  // -- the server's side --
  open (): void {
    this.readyState = 1
    this.onopen?.({})
  }

  push (message: Message): void {
    const bytes = encode(message)
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) })
  }

  serverClose (code: number, reason = ''): void {
    if (this.readyState === 3) return
    this.readyState = 3
    this.onclose?.({ code, reason })
  }
}

const last = (): FakeSocket => FakeSocket.all[FakeSocket.all.length - 1]
const providers: WedsyncProvider[] = []

function provider (options: WedsyncProviderOptions = {}): WedsyncProvider {
  const p = new WedsyncProvider('ws://gw/ws', 'w1', new Y.Doc(), {
    WebSocketPolyfill: FakeSocket, delays: function * () { while (true) yield 100 }, ...options
  })
  providers.push(p)
  return p
}

/** Let the provider's message queue (promises) run. */
const settle = async (): Promise<void> => { for (let i = 0; i < 10; i++) await Promise.resolve() }

async function live (socket: FakeSocket, doc?: Y.Doc): Promise<void> {
  socket.open()
  socket.push({ type: 'Hello', version: 1, features: 15 })
  socket.push({ type: 'SyncStep1', stateVector: Y.encodeStateVector(new Y.Doc()) })
  socket.push({ type: 'CatchUp', epoch: 1, offset: 0, flags: 0, update: Y.encodeStateAsUpdate(doc ?? new Y.Doc()) })
  await settle()
}

beforeEach(() => {
  FakeSocket.all = []
  vi.useFakeTimers()
})
afterEach(() => {
  for (const p of providers.splice(0)) p.destroy()
  vi.useRealTimers()
})

describe('opening a connection', () => {
  test('the platform option is declared on the URL (spec §1)', async () => {
    provider({ platform: 'ios' })
    await settle()
    expect(last().url).toBe('ws://gw/ws/w1?platform=ios')
  })

  test('auth, HELLO with every feature, then RESUME; the step 1 is answered after CATCH_UP', async () => {
    const p = provider({ token: 'a.b.c' })
    await settle()
    const socket = last()
    expect(socket.url).toBe('ws://gw/ws/w1?platform=web') // spec §1: declared, web by default
    socket.open()
    expect(socket.sent.map((m) => m.type)).toEqual(['Auth', 'Hello', 'Resume'])
    expect(socket.sent[0]).toEqual({ type: 'Auth', authType: 1, text: 'a.b.c' })
    expect(socket.sent[1]).toEqual({ type: 'Hello', version: 1, features: 15 })
    expect(socket.sent[2]).toEqual(expect.objectContaining({ type: 'Resume', epoch: 0, offset: 0 }))

    p.doc.getMap('core').set('venue', 'Hall') // before the CATCH_UP: kept, not sent yet
    socket.push({ type: 'SyncStep1', stateVector: Y.encodeStateVector(new Y.Doc()) })
    await settle()
    expect(socket.sent.length).toBe(3)
    socket.push({ type: 'CatchUp', epoch: 3, offset: 42, flags: 0, update: new Uint8Array([0, 0]) })
    await settle()
    expect(socket.sent.slice(3).map((m) => m.type)).toEqual(['SyncStep2', 'SyncUpdate', 'AwarenessUpdate'])
    expect(p.synced).toBe(true)
    expect([p.epoch, p.offset]).toEqual([3, 42])
    expect(p.pendingEdits).toBe(1)
    socket.push({ type: 'Ack', seq: 1 }) // the step 2: no edit of ours
    await settle()
    expect(p.pendingEdits).toBe(1)
    socket.push({ type: 'Ack', seq: 2 })
    await settle()
    expect(p.pendingEdits).toBe(0)
  })

  test('a gzip CATCH_UP is decompressed; a RESET one replaces the document', async () => {
    const p = provider()
    await settle()
    const remote = new Y.Doc()
    remote.getMap('core').set('partner_a', 'Ana')
    const update = Y.encodeStateAsUpdate(remote)
    last().open()
    last().push({ type: 'CatchUp', epoch: 1, offset: 5, flags: 2, update: gzipSync(update) })
    await vi.waitFor(() => { expect(p.doc.getMap('core').get('partner_a')).toBe('Ana') })
    expect(p.catchUps).toEqual([{ bytes: gzipSync(update).length, gzip: true, reset: false }])

    p.doc.getMap('core').set('notes', 'unacknowledged')
    last().serverClose(4003)
    await vi.advanceTimersByTimeAsync(100)
    const fresh = new Y.Doc()
    fresh.getMap('core').set('partner_a', 'Carla')
    const old = p.doc
    last().open()
    last().push({ type: 'CatchUp', epoch: 2, offset: 0, flags: 1, update: Y.encodeStateAsUpdate(fresh) })
    await settle()
    expect(p.doc).not.toBe(old)
    expect(p.doc.getMap('core').toJSON()).toEqual({ partner_a: 'Carla' })
    expect(p.pendingEdits).toBe(0)
    expect(p.resets).toBe(1)
    expect(last().sent.map((m) => m.type)).toEqual(['Hello', 'Resume', 'AwarenessUpdate']) // nothing stale resent
  })
})

describe('what the server says', () => {
  test('STATUS acks paused: edits stay pending ("saving"), then the ACKs come', async () => {
    const p = provider()
    const saved: Array<{ pending: number, acksPaused: boolean }> = []
    p.on('saved', (event) => saved.push(event))
    await settle()
    await live(last())
    last().push({ type: 'Status', flags: 1 })
    await settle()
    expect(p.acksPaused).toBe(true)
    p.doc.getMap('core').set('venue', 'Hall')
    last().push({ type: 'Status', flags: 0 })
    last().push({ type: 'Ack', seq: 2 })
    await settle()
    expect(saved).toEqual([
      { pending: 0, acksPaused: true }, { pending: 1, acksPaused: true },
      { pending: 1, acksPaused: false }, { pending: 0, acksPaused: false }
    ])
  })

  test('REJECT is an event with the field and the reason; awareness of others is applied', async () => {
    const p = provider()
    const rejects: unknown[] = []
    p.on('reject', (event) => rejects.push(event))
    await settle()
    await live(last())
    last().push({ type: 'Reject', seq: 2, field: 'core.venue', reason: 'role vendor may not write core fields' })
    const other = new Y.Doc()
    const { Awareness, encodeAwarenessUpdate } = await import('y-protocols/awareness')
    const awareness = new Awareness(other)
    awareness.setLocalStateField('user', { name: 'Bea' })
    last().push({ type: 'AwarenessUpdate', payload: encodeAwarenessUpdate(awareness, [other.clientID]) })
    await settle()
    expect(rejects).toEqual([{ seq: 2, field: 'core.venue', reason: 'role vendor may not write core fields' }])
    expect(p.awareness.getStates().get(other.clientID)).toEqual({ user: { name: 'Bea' } })
    awareness.destroy()
    last().serverClose(1006) // the others' presence is unknown once the connection is gone
    expect(p.awareness.getStates().has(other.clientID)).toBe(false)
  })
})

describe('close codes (proto/spec.md §6)', () => {
  test.each([1009, 4500, 4503])('%d stops: no reconnect', async (code) => {
    const p = provider()
    await settle()
    await live(last())
    last().serverClose(code)
    await vi.advanceTimersByTimeAsync(100_000)
    expect(FakeSocket.all.length).toBe(1)
    expect(p.status).toBe('disconnected')
  })

  test.each([1006, 1011, 4001, 4002, 4003, 4429])('%d reconnects after the backoff delay', async (code) => {
    provider()
    await settle()
    await live(last())
    last().serverClose(code)
    await vi.advanceTimersByTimeAsync(99)
    expect(FakeSocket.all.length).toBe(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(FakeSocket.all.length).toBe(2)
  })

  test("after DRAIN the reconnect waits its retry_ms too, and goes to the next URL", async () => {
    provider({ urls: ['ws://one/ws', 'ws://two/ws/'] })
    await settle()
    expect(last().url).toBe('ws://one/ws/w1?platform=web')
    await live(last())
    last().push({ type: 'Drain', retryMs: 1500 })
    await settle()
    last().serverClose(1012)
    await vi.advanceTimersByTimeAsync(1599)
    expect(FakeSocket.all.length).toBe(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(last().url).toBe('ws://two/ws/w1?platform=web')
  })

  test('unacknowledged edits are resent, merged, after the next CATCH_UP', async () => {
    const p = provider()
    await settle()
    await live(last())
    p.doc.getMap('core').set('venue', 'Hall')
    p.doc.getMap('core').set('guest_count', 80)
    last().push({ type: 'Ack', seq: 2 }) // the step 2 (seq 1) and the first edit only
    await settle()
    expect(p.pendingEdits).toBe(1)
    last().serverClose(1006)
    await vi.advanceTimersByTimeAsync(100)
    await live(last())
    const resent = last().sent.filter((m) => m.type === 'SyncUpdate')
    expect(resent.length).toBe(1)
    const update = (resent[0] as { update: Uint8Array }).update
    expect(Y.decodeUpdate(update).structs.length).toBe(1) // the unacknowledged edit only
    const [first] = FakeSocket.all[0].sent.filter((m) => m.type === 'SyncUpdate') as Array<{ update: Uint8Array }>
    const check = new Y.Doc() // what the server holds: the acknowledged edit, then the resent one
    Y.applyUpdate(check, first.update)
    Y.applyUpdate(check, update)
    expect(check.getMap('core').toJSON()).toEqual({ venue: 'Hall', guest_count: 80 })
    last().push({ type: 'Ack', seq: 2 }) // step 2 then the resent update
    await settle()
    expect(p.pendingEdits).toBe(0)
  })

  test('disconnect() stays offline; connect() resumes from the last position', async () => {
    const p = provider()
    await settle()
    await live(last())
    last().push({ type: 'Position', epoch: 1, offset: 9 })
    await settle()
    p.disconnect()
    await vi.advanceTimersByTimeAsync(100_000)
    expect(FakeSocket.all.length).toBe(1)
    p.connect()
    await settle()
    last().open()
    expect(last().sent[1]).toEqual(expect.objectContaining({ type: 'Resume', epoch: 1, offset: 9 }))
  })
})
