// The SDK's shared socket (WedsyncSocket, proto/spec.md §10) against real `gateway serve`
// processes: many providers over one /mux socket, each with its own durable acks, resume and
// rejects; a wedding the token does not cover closes alone; the socket's loss reconnects all.
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'

import { WedsyncProvider, WedsyncSocket, type WedsyncProviderOptions } from '../../src/index.js'
import {
  JWT_SECRET, createWedding, genToken, newWedding, startGateway, stopGateways, waitFor, weddingJson,
  type RunningGateway
} from '../gateway.js'

const providers: WedsyncProvider[] = []
const sockets: WedsyncSocket[] = []

function muxSocket (gateway: RunningGateway, token?: string): WedsyncSocket {
  const socket = new WedsyncSocket(gateway.wsUrl.replace(/\/ws$/, '/mux'), { token, WebSocketPolyfill: WebSocket })
  sockets.push(socket)
  return socket
}

function client (socket: WedsyncSocket, wedding: string, options: WedsyncProviderOptions = {}): WedsyncProvider {
  const provider = new WedsyncProvider('', wedding, new Y.Doc(), { socket, ...options })
  providers.push(provider)
  return provider
}

const durable = async (p: WedsyncProvider): Promise<void> => {
  await waitFor(() => p.synced && p.pendingEdits === 0, `${p.weddingId}: every edit durable`)
}
const core = (p: WedsyncProvider): Record<string, unknown> => p.doc.getMap('core').toJSON()

afterEach(() => {
  for (const p of providers.splice(0)) p.destroy()
  for (const s of sockets.splice(0)) s.close()
})
afterAll(stopGateways)

describe('a shared socket in development mode', () => {
  let gateway: RunningGateway
  beforeAll(async () => { gateway = await startGateway() })

  test('many weddings over one socket, each acknowledged durable on its own', async () => {
    const socket = muxSocket(gateway)
    const weddings = Array.from({ length: 10 }, () => newWedding())
    const all = weddings.map((w) => client(socket, w))
    await waitFor(() => all.every((p) => p.synced), 'every provider synced')
    expect(all.every((p) => p.acksEnabled)).toBe(true)
    all.forEach((p, i) => createWedding(p, { venue: `Venue ${i}` }))
    for (const p of all) await durable(p)
    expect(socket.connections).toBe(1)
    for (const [i, w] of weddings.entries()) {
      expect((await weddingJson(gateway, w)).core.venue).toBe(`Venue ${i}`)
    }
  })

  test('the socket lost: every provider resumes and resends its offline edits', async () => {
    const socket = muxSocket(gateway)
    const weddings = [newWedding(), newWedding(), newWedding()]
    const all = weddings.map((w) => client(socket, w, { delays: function * () { while (true) yield 10 } }))
    await waitFor(() => all.every((p) => p.synced), 'every provider synced')
    all.forEach((p) => createWedding(p))
    for (const p of all) await durable(p)
    socket.close()
    await waitFor(() => all.every((p) => !p.synced), 'every provider saw the loss')
    all.forEach((p, i) => p.doc.getMap('core').set('notes', `offline ${i}`))
    await waitFor(() => socket.connections === 2 && all.every((p) => p.synced), 'every provider back')
    for (const p of all) await durable(p)
    for (const [i, w] of weddings.entries()) {
      expect((await weddingJson(gateway, w)).core.notes).toBe(`offline ${i}`)
    }
    expect(all.every((p) => p.catchUps.length === 2)).toBe(true) // resumed, not resynced
  })
})

describe('a shared socket with tokens', () => {
  let gateway: RunningGateway
  beforeAll(async () => { gateway = await startGateway({ GATEWAY_JWT_SECRET: JWT_SECRET }) })

  test('a wedding outside the token closes alone; a viewer wedding gets rejects', async () => {
    const [mine, viewed, other] = [newWedding(), newWedding(), newWedding()]
    const token = await genToken('--subject', 'florist', '--wedding', mine, '--role', 'planner',
      '--wedding', viewed, '--role', 'viewer')
    const planner = await genToken('--subject', 'planner', '--wedding', viewed, '--role', 'planner')
    const setup = client(muxSocket(gateway, planner), viewed)
    createWedding(setup)
    await durable(setup)

    const socket = muxSocket(gateway, token)
    const a = client(socket, mine)
    const v = client(socket, viewed)
    const closes: number[] = []
    const o = client(socket, other)
    o.on('close', ({ code }) => closes.push(code))
    await waitFor(() => closes.length > 0, 'the other wedding refused')
    expect(closes).toEqual([4503])
    await waitFor(() => a.synced && v.synced && core(v).partner_a === 'Ana', 'the covered weddings synced')
    createWedding(a)
    v.doc.getMap('core').set('venue', 'Viewer Hall')
    await waitFor(() => v.rejected.some((r) => r.field === 'core.venue'), 'the viewer write rejected')
    expect(a.rejected).toEqual([])
    await durable(a)
    await waitFor(() => core(v).venue === undefined, 'the refused write undone')
    expect(o.status).toBe('disconnected')
    expect(socket.connections).toBe(1)
  })
})

describe('a shared socket whose gateway goes silent (half-open)', () => {
  test('the socket is probed, dropped, and every wedding comes back over a new one', async () => {
    const gateway = await startGateway()
    const socket = new WedsyncSocket(gateway.wsUrl.replace(/\/ws$/, '/mux'), {
      WebSocketPolyfill: WebSocket, liveness: { idleMs: 400, answerMs: 400 }
    })
    sockets.push(socket)
    const fast = function * (): Generator<number> { while (true) yield 50 }
    // the providers' own probes off: the socket's alone finds the silence
    const all = [newWedding(), newWedding()].map((w) => client(socket, w, { liveness: { idleMs: 0 }, delays: fast }))
    const closes: number[][] = all.map(() => [])
    all.forEach((p, i) => p.on('close', ({ code }) => closes[i].push(code)))
    await waitFor(() => all.every((p) => p.synced), 'every provider synced')
    all.forEach((p) => createWedding(p))
    for (const p of all) await durable(p)
    gateway.process.kill('SIGSTOP') // its kernel keeps the TCP connection: no close ever comes
    all.forEach((p, i) => p.doc.getMap('core').set('notes', `while silent ${i}`))
    await waitFor(() => closes.every((c) => c.includes(1006)), 'every wedding saw the socket dropped')
    expect(socket.lastClose?.reason).toMatch(/^no message from the server for \d+ s$/)
    gateway.process.kill('SIGCONT')
    await waitFor(() => socket.connections >= 2 && all.every((p) => p.synced), 'every wedding back over a new socket')
    for (const p of all) await durable(p)
    for (const [i, p] of all.entries()) {
      expect((await weddingJson(gateway, p.weddingId)).core.notes).toBe(`while silent ${i}`)
    }
  })
})
