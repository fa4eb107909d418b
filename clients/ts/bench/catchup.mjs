// Bytes on the wire and time to catch up after N missed timeline entries: the SDK against the
// gateway (RESUME → one gzip CATCH_UP) vs a stock y-websocket provider against the reference
// @y/websocket-server (sync step 1 → step 2). Run by catchup.sh, which starts both servers:
//   node bench/catchup.mjs GATEWAY_WS_URL REFERENCE_WS_URL [MISSED=10,500,5000] [REPEATS=3]
// For each server, N and repeat, in a wedding of its own: a writer creates the wedding and 20
// entries; a reader syncs and leaves; the writer appends N entries (durable: acknowledged by the
// gateway; on the reference, seen by a third client the server relayed them to); the reader
// comes back. Measured from connect() until the reader holds all entries: the bytes of every
// message it received, and the time.
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'
// The stock client and its own yjs, both from the repository's root package.json (interop tests).
import { WebsocketProvider } from '../../../node_modules/y-websocket/src/y-websocket.js'
import * as StockY from '../../../node_modules/yjs/dist/yjs.mjs'

import { WedsyncProvider } from '../dist/index.js'

const [gatewayUrl, referenceUrl, missedArg = '10,500,5000', repeatsArg = '3'] = process.argv.slice(2)
const MISSED = missedArg.split(',').map(Number)
const REPEATS = Number(repeatsArg)
const HISTORY = 20

async function waitFor (check, what, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 1)) // polls a condition
  }
}

function countingSocket (counter) {
  return class extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols)
      this.on('message', (data) => { counter.bytes += data.byteLength ?? data.length; counter.messages++ })
    }
  }
}

function addEntries (Y, doc, from, count) {
  for (let i = from; i < from + count; i++) {
    doc.transact(() => {
      const entry = new Y.Map()
      entry.set('id', `e-${i}`)
      entry.set('title', `Entry ${i}`)
      entry.set('start', `${String(8 + (i % 12)).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}`)
      entry.set('notes', `Bring the ribbons for table ${i % 40}; the florist arrives early.`)
      doc.getArray('timeline').push([entry])
    })
  }
}

function createWedding (Y, doc) {
  doc.transact(() => {
    const core = doc.getMap('core')
    core.set('partner_a', 'Ana Silva')
    core.set('partner_b', 'Bea Costa')
    core.set('status', 'planning')
  })
}

async function gatewayCase (missed, wedding) {
  const writer = new WedsyncProvider(gatewayUrl, wedding, new Y.Doc(), { WebSocketPolyfill: WebSocket })
  await waitFor(() => writer.synced, 'writer synced')
  createWedding(Y, writer.doc)
  addEntries(Y, writer.doc, 0, HISTORY)
  await waitFor(() => writer.pendingEdits === 0, 'history durable')
  const counter = { bytes: 0, messages: 0 }
  const reader = new WedsyncProvider(gatewayUrl, wedding, new Y.Doc(), { WebSocketPolyfill: countingSocket(counter) })
  await waitFor(() => reader.synced && reader.doc.getArray('timeline').length === HISTORY, 'reader synced')
  reader.disconnect()
  await waitFor(() => reader.status === 'disconnected', 'reader gone')
  addEntries(Y, writer.doc, HISTORY, missed)
  await waitFor(() => writer.pendingEdits === 0, 'missed edits durable')
  counter.bytes = counter.messages = 0
  const start = performance.now()
  reader.connect()
  await waitFor(() => reader.synced && reader.doc.getArray('timeline').length === HISTORY + missed, 'reader caught up')
  const ms = performance.now() - start
  const catchUp = reader.catchUps.at(-1)
  writer.destroy()
  reader.destroy()
  return { bytes: counter.bytes, messages: counter.messages, ms, payload: catchUp.bytes, gzip: catchUp.gzip }
}

async function referenceCase (missed, wedding) {
  const provider = (doc, WS) => new WebsocketProvider(referenceUrl, wedding, doc, { WebSocketPolyfill: WS, disableBc: true })
  const writer = provider(new StockY.Doc(), WebSocket)
  const observer = provider(new StockY.Doc(), WebSocket)
  await waitFor(() => writer.synced && observer.synced, 'writer synced')
  createWedding(StockY, writer.doc)
  addEntries(StockY, writer.doc, 0, HISTORY)
  await waitFor(() => observer.doc.getArray('timeline').length === HISTORY, 'history relayed')
  const counter = { bytes: 0, messages: 0 }
  const readerDoc = new StockY.Doc()
  const reader = provider(readerDoc, countingSocket(counter))
  await waitFor(() => reader.synced && readerDoc.getArray('timeline').length === HISTORY, 'reader synced')
  reader.disconnect()
  await waitFor(() => !reader.wsconnected && !reader.synced, 'reader gone')
  addEntries(StockY, writer.doc, HISTORY, missed)
  await waitFor(() => observer.doc.getArray('timeline').length === HISTORY + missed, 'missed edits relayed')
  counter.bytes = counter.messages = 0
  const start = performance.now()
  reader.connect()
  await waitFor(() => reader.synced && readerDoc.getArray('timeline').length === HISTORY + missed, 'reader caught up')
  const ms = performance.now() - start
  for (const p of [writer, observer, reader]) p.destroy()
  return { bytes: counter.bytes, messages: counter.messages, ms }
}

const median = (values) => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)]

const rows = []
for (const missed of MISSED) {
  const results = { gateway: [], reference: [] }
  for (let r = 0; r < REPEATS; r++) {
    const tag = `${missed}-${r}-${Math.random().toString(16).slice(2, 8)}`
    results.gateway.push(await gatewayCase(missed, `bench-gw-${tag}`))
    results.reference.push(await referenceCase(missed, `bench-ref-${tag}`))
  }
  const row = { missed }
  for (const [server, runs] of Object.entries(results)) {
    row[server] = { bytes: median(runs.map((x) => x.bytes)), ms: median(runs.map((x) => x.ms)), runs }
  }
  row.ratio = row.gateway.bytes / row.reference.bytes
  rows.push(row)
  console.error(JSON.stringify(row))
}

console.log('| missed timeline entries | SDK ↔ gateway: bytes received | time ms | y-websocket ↔ @y/websocket-server: bytes | time ms | bytes ratio |')
console.log('|---:|---:|---:|---:|---:|---:|')
for (const row of rows) {
  console.log(`| ${row.missed} | ${row.gateway.bytes} | ${row.gateway.ms.toFixed(1)} | ${row.reference.bytes} | ${row.reference.ms.toFixed(1)} | ${row.ratio.toFixed(2)}× |`)
}
process.exit(0)
