// The SDK in Node (the `ws` package) against real `gateway serve` processes: durable acks,
// refused edits, resume with a gzip CATCH_UP, an epoch reset, token refresh, close codes that
// stop, and a drain that moves the client to a second gateway.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'

import { WedsyncProvider, type WedsyncProviderOptions } from '../../src/index.js'
import {
  JWT_SECRET, ROOT, createWedding, genToken, newWedding, startGateway, stopGateways, twoGatewaysOnOneStore,
  waitFor, weddingJson, type RunningGateway
} from '../gateway.js'

const providers: WedsyncProvider[] = []

function client (url: string, wedding: string, options: WedsyncProviderOptions = {}): WedsyncProvider {
  const provider = new WedsyncProvider(url, wedding, new Y.Doc(), {
    WebSocketPolyfill: WebSocket,
    ...options
  })
  providers.push(provider)
  return provider
}

function addEntries (provider: WedsyncProvider, count: number, prefix: string): void {
  for (let i = 0; i < count; i++) {
    provider.doc.transact(() => {
      const entry = new Y.Map<string>()
      entry.set('id', `${prefix}-${i}`)
      entry.set('title', `Entry ${i} of ${prefix}`)
      entry.set('start', '10:00')
      entry.set('notes', `Notes for entry ${i}: the florist arrives early, bring the ribbons.`)
      provider.doc.getArray('timeline').push([entry])
    })
  }
}

const synced = async (p: WedsyncProvider): Promise<void> => { await waitFor(() => p.synced, `${p.url} synced`) }
const durable = async (p: WedsyncProvider): Promise<void> => {
  await waitFor(() => p.synced && p.pendingEdits === 0, `${p.url}: every edit durable`)
}
const core = (p: WedsyncProvider): Record<string, unknown> => p.doc.getMap('core').toJSON()

afterEach(() => { for (const p of providers.splice(0)) p.destroy() })
afterAll(stopGateways)

describe('one gateway in development mode', () => {
  let gateway: RunningGateway
  beforeAll(async () => { gateway = await startGateway() })

  test('an edit is pending until the server acknowledges it durable, then saved', async () => {
    const wedding = newWedding()
    const a = client(gateway.wsUrl, wedding)
    const saved: number[] = []
    a.on('saved', ({ pending }) => saved.push(pending))
    await synced(a)
    expect(a.acksEnabled).toBe(true)
    createWedding(a, { venue: 'Orangery' })
    expect(a.pendingEdits).toBe(1) // reported at once, before any ACK
    await durable(a)
    expect(saved).toEqual([1, 0])
    expect((await weddingJson(gateway, wedding)).core.venue).toBe('Orangery')

    const b = client(gateway.wsUrl, wedding)
    await waitFor(() => core(b).venue === 'Orangery', 'a second client sees the edit')
    b.doc.getMap('core').set('guest_count', 120)
    await waitFor(() => core(a).guest_count === 120, 'the first client sees the second one')
    await durable(b)
  })

  test('edits missed while away arrive in one gzip CATCH_UP; offline edits are resent', async () => {
    const wedding = newWedding()
    const a = client(gateway.wsUrl, wedding)
    const b = client(gateway.wsUrl, wedding)
    await synced(a)
    createWedding(a)
    await durable(a)
    await waitFor(() => core(b).partner_a === 'Ana', 'b has the wedding')
    a.disconnect()
    await waitFor(() => a.status === 'disconnected', 'a is offline')

    addEntries(b, 40, 'b')
    a.doc.getMap('core').set('notes', 'Written offline')
    expect(a.pendingEdits).toBe(1)
    await durable(b)

    const before = a.catchUps.length
    a.connect()
    await waitFor(() => a.doc.getArray('timeline').length === 40, 'a caught up')
    const catchUp = a.catchUps[before]
    expect(catchUp.gzip).toBe(true)
    expect(catchUp.reset).toBe(false)
    expect(catchUp.bytes).toBeLessThan(Y.encodeStateAsUpdate(b.doc).length / 2)
    await durable(a)
    await waitFor(() => core(b).notes === 'Written offline', 'the offline edit reached b')
    expect(a.doc.getArray('timeline').toJSON()).toEqual(b.doc.getArray('timeline').toJSON())
    expect(a.epoch).toBe(1)
    expect(a.offset).toBeGreaterThan(0)
  })

  test('after an epoch reset the client replaces its document and drops stale edits', async () => {
    const wedding = newWedding()
    const a = client(gateway.wsUrl, wedding)
    await synced(a)
    createWedding(a, { venue: 'Old venue' })
    await durable(a)
    a.disconnect()
    await waitFor(() => a.status === 'disconnected', 'a is offline')
    const response = await fetch(`${gateway.httpUrl}/v1/weddings/${wedding}/reset`, { method: 'POST' })
    expect(response.status).toBe(200)
    expect((await response.json()).epoch).toBe(2)

    const b = client(gateway.wsUrl, wedding)
    await synced(b)
    createWedding(b, { partner_a: 'Carla' })
    await durable(b)

    a.doc.getMap('core').set('notes', 'stale, from the old history')
    const oldDoc = a.doc
    const resets: Y.Doc[] = []
    a.on('reset', ({ doc }) => resets.push(doc))
    a.connect()
    await waitFor(() => resets.length === 1, 'the reset event')
    expect(a.doc).toBe(resets[0])
    expect(a.doc).not.toBe(oldDoc)
    expect(core(a)).toEqual({ partner_a: 'Carla', partner_b: 'Bea', status: 'planning' })
    expect(a.epoch).toBe(2)
    expect(a.pendingEdits).toBe(0)
    a.doc.getMap('core').set('venue', 'New venue') // the new document is live
    await durable(a)
    await waitFor(() => core(b).venue === 'New venue', 'b sees an edit of the new document')
    expect(core(b).notes).toBeUndefined()
    expect((await weddingJson(gateway, wedding)).core).toEqual(core(b))
  })

  test('the SDK and a stock y-websocket provider edit one wedding and converge', async () => {
    // The stock client and its own yjs come from the repository's root package (interop tests).
    const root = (path: string): string => pathToFileURL(join(ROOT, 'node_modules', path)).href
    const { WebsocketProvider } = await import(root('y-websocket/src/y-websocket.js'))
    const StockY = await import(root('yjs/dist/yjs.mjs'))
    const wedding = newWedding()
    const sdk = client(gateway.wsUrl, wedding)
    await synced(sdk)
    createWedding(sdk)
    const stockDoc = new StockY.Doc()
    const stock = new WebsocketProvider(gateway.wsUrl, wedding, stockDoc, { WebSocketPolyfill: WebSocket, disableBc: true })
    try {
      await waitFor(() => stockDoc.getMap('core').get('partner_a') === 'Ana', 'the stock client has the wedding')
      stockDoc.getMap('core').set('venue', 'From the stock client')
      sdk.doc.getMap('core').set('guest_count', 42)
      await waitFor(() => core(sdk).venue === 'From the stock client', 'the SDK sees the stock edit')
      await waitFor(() => stockDoc.getMap('core').get('guest_count') === 42, 'the stock client sees the SDK edit')
      await durable(sdk)
      expect(stockDoc.getMap('core').toJSON()).toEqual(core(sdk))
    } finally {
      stock.destroy()
    }
  })

  test('awareness reaches the other client and leaves with it', async () => {
    const wedding = newWedding()
    const a = client(gateway.wsUrl, wedding)
    const b = client(gateway.wsUrl, wedding)
    a.awareness.setLocalStateField('user', { name: 'Ana' })
    await synced(a)
    await synced(b)
    await waitFor(() => b.awareness.getStates().get(a.awareness.clientID)?.user?.name === 'Ana', 'b sees Ana')
    a.disconnect()
    await waitFor(() => !b.awareness.getStates().has(a.awareness.clientID), 'Ana left')
  })
})

describe('a gateway that stops answering', () => {
  test('an edit sent but not acknowledged stays pending; it is resent to the next gateway', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'wedsync-ts-kill-'))
    const running: RunningGateway[] = []
    try {
      const first = await startGateway({}, { dataDir })
      running.push(first)
      const wedding = newWedding()
      const sent: Uint8Array[] = []
      class Recording extends WebSocket {
        send (data: Uint8Array): void {
          sent.push(data)
          super.send(data)
        }
      }
      const a = client(first.wsUrl, wedding, { WebSocketPolyfill: Recording, delays: function * () { while (true) yield 50 } })
      await synced(a)
      createWedding(a)
      await durable(a)
      first.process.kill('SIGSTOP') // the edit reaches the socket; nobody will ever ACK it
      const before = sent.length
      a.doc.getMap('core').set('venue', 'Sent, not saved')
      await waitFor(() => sent.length > before, 'the edit was sent')
      expect(sent[before][0]).toBe(0) // a sync message: the update itself
      expect(a.pendingEdits).toBe(1) // sent is not saved
      first.process.kill('SIGKILL')
      await first.exited
      const second = await startGateway({}, { port: first.port, dataDir })
      running.push(second)
      await waitFor(() => a.connections === 2 && a.synced, 'a reconnected to the restarted gateway', 30_000)
      await durable(a)
      expect((await weddingJson(second, wedding)).core.venue).toBe('Sent, not saved')
    } finally {
      for (const gateway of running) await gateway.stop('SIGKILL')
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('a gateway that checks tokens', () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    gateway = await startGateway({ GATEWAY_JWT_SECRET: JWT_SECRET, GATEWAY_JWT_LEEWAY_SECONDS: '0' })
  })

  test("a vendor's refused edit gets REJECT and the old value back", async () => {
    const wedding = newWedding()
    const planner = client(gateway.wsUrl, wedding, {
      token: await genToken('--subject', 'pat', '--wedding', wedding, '--role', 'planner')
    })
    await synced(planner)
    createWedding(planner, { venue: 'Orangery' })
    await durable(planner)

    const vendorToken = await genToken('--subject', 'flo', '--wedding', wedding, '--role', 'vendor', '--vendor-id', 'florist')
    const vendor = client(gateway.wsUrl, wedding, { token: async () => vendorToken })
    const rejects: Array<{ field: string, reason: string }> = []
    vendor.on('reject', (event) => rejects.push(event))
    await waitFor(() => core(vendor).venue === 'Orangery', 'the vendor sees the venue')
    vendor.doc.getMap('core').set('venue', 'Somewhere else')
    await waitFor(() => rejects.length === 1, 'the REJECT')
    expect(rejects[0].field).toBe('core.venue')
    expect(rejects[0].reason).toMatch(/\S/)
    await waitFor(() => core(vendor).venue === 'Orangery', 'the old value is back')
    await durable(vendor) // a refused edit is still acknowledged: nothing to resend
    expect(core(planner).venue).toBe('Orangery')

    vendor.doc.transact(() => {
      const entry = new Y.Map<string>()
      for (const [k, v] of Object.entries({ id: 'flowers', title: 'Flowers', start: '09:00', vendor_id: 'florist' })) entry.set(k, v)
      vendor.doc.getArray('timeline').push([entry])
    })
    await durable(vendor)
    await waitFor(() => planner.doc.getArray('timeline').length === 1, 'the vendor added its own entry')
    expect(rejects.length).toBe(1)
  })

  test('a token function is called again before the token expires: the connection stays', async () => {
    const wedding = newWedding()
    let calls = 0
    const a = client(gateway.wsUrl, wedding, {
      token: async () => {
        calls++
        // 10 s: refreshed half-way, so a token command slowed down by a busy machine (a Python
        // process start) still returns long before the old token expires
        return await genToken('--subject', 'pat', '--wedding', wedding, '--role', 'planner', '--ttl', '10')
      }
    })
    await synced(a)
    createWedding(a)
    await durable(a)
    await waitFor(() => calls >= 3, 'the token refreshed past the first expiry', 25_000)
    a.doc.getMap('core').set('venue', 'Still connected')
    await durable(a)
    expect(a.lastClose).toBe(null)
    expect(a.connections).toBe(1)
  })

  test('4503 (no grant in this wedding) stops the client; it does not reconnect', async () => {
    const closes: Array<{ code: number, willReconnect: boolean }> = []
    const a = client(gateway.wsUrl, newWedding(), {
      token: await genToken('--subject', 'pat', '--wedding', 'another-wedding', '--role', 'planner')
    })
    a.on('close', (event) => closes.push(event))
    await waitFor(() => closes.length === 1, 'the close')
    expect(closes[0]).toEqual(expect.objectContaining({ code: 4503, willReconnect: false }))
    expect(a.status).toBe('disconnected')
    expect(a.connections).toBe(1)
  })

  test('an expired string token (4401) stops; a token function gets a new one and reconnects', async () => {
    const wedding = newWedding()
    const expired = await genToken('--subject', 'pat', '--wedding', wedding, '--role', 'planner', '--ttl', '0.001')
    const closes: Array<{ code: number, willReconnect: boolean }> = []
    const a = client(gateway.wsUrl, wedding, { token: expired })
    a.on('close', (event) => closes.push(event))
    await waitFor(() => closes.length === 1, 'the close')
    expect(closes[0]).toEqual(expect.objectContaining({ code: 4401, willReconnect: false }))

    let calls = 0
    const b = client(gateway.wsUrl, wedding, {
      delays: function * () { while (true) yield 0 },
      token: async () => {
        calls++
        return calls === 1 ? expired : await genToken('--subject', 'pat', '--wedding', wedding, '--role', 'planner')
      }
    })
    await synced(b)
    expect(b.lastClose?.code).toBe(4401)
    expect(calls).toBe(2)
  })
})

describe('two gateways on one store', () => {
  const gateways = twoGatewaysOnOneStore()

  test('a drain (DRAIN, 1012) moves the client to the second URL; nothing is lost', async () => {
    const { one, two } = gateways
    const wedding = newWedding()
    const closes: number[] = []
    const a = client(one.wsUrl, wedding, { urls: [one.wsUrl, two.wsUrl] })
    a.on('close', ({ code }) => closes.push(code))
    await synced(a)
    expect(a.url).toBe(`${one.wsUrl}/${wedding}`)
    createWedding(a)
    await durable(a)
    addEntries(a, 5, 'before-drain') // not waited for: acknowledged before the DRAIN or resent
    const exit = one.stop('SIGTERM')
    await waitFor(() => closes.length > 0, 'the drain close')
    expect(closes[0]).toBe(1012)
    expect(a.drains).toBe(1) // the DRAIN came before the close
    await waitFor(() => a.synced && a.url === `${two.wsUrl}/${wedding}`, 'a reconnected to the second gateway')
    a.doc.getMap('core').set('venue', 'After the drain')
    await durable(a)
    const stored = await weddingJson(two, wedding)
    expect(stored.core.venue).toBe('After the drain')
    expect(stored.timeline.map((e: { id: string }) => e.id)).toEqual([0, 1, 2, 3, 4].map((i) => `before-drain-${i}`))
    await exit // uvicorn ends by re-raising SIGTERM: the exit status is the signal
  })
})

describe('a gateway that goes silent without closing (half-open)', () => {
  const gateways = twoGatewaysOnOneStore()

  test('liveness: a silent connection is probed, dropped, and the edit made meanwhile is saved elsewhere', async () => {
    const { one, two } = gateways
    const wedding = newWedding()
    const closes: Array<{ code: number, reason: string }> = []
    const a = client(one.wsUrl, wedding, {
      urls: [one.wsUrl, two.wsUrl],
      liveness: { idleMs: 400, answerMs: 400 },
      delays: function * () { while (true) yield 50 }
    })
    a.on('close', ({ code, reason }) => closes.push({ code, reason }))
    await synced(a)
    createWedding(a)
    await durable(a)
    one.process.kill('SIGSTOP') // its kernel keeps the TCP connection: no close ever comes
    a.doc.getMap('core').set('venue', 'Written while the node was silent')
    await waitFor(() => closes.length > 0, 'the provider gives the silent connection up')
    expect(closes[0].code).toBe(1006)
    expect(closes[0].reason).toMatch(/^no message from the server for \d+ s$/)
    await waitFor(() => a.synced && a.url === `${two.wsUrl}/${wedding}`, 'a reconnected to the second gateway')
    await durable(a) // the second node takes the wedding over once the silent owner's lease lapses
    expect((await weddingJson(two, wedding)).core.venue).toBe('Written while the node was silent')
  })
})
