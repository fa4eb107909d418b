// Stock @hocuspocus/provider on /mux: many weddings over one HocuspocusProviderWebsocket, each
// also edited by a stock y-websocket client on /ws. Checks convergence, awareness per document,
// a document added late to the open socket, and that every provider's unsynced changes reach 0
// (the gateway's sync-status follows the durable ACK, proto/spec.md §10.4).
// Usage: node mux_provider.mjs WS_BASE CONFIG_JSON → prints one JSON line.
//   CONFIG_JSON: {"weddings": [...], "late": "id", "muxToken": "...", "wsToken": "..."}
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import WebSocket from 'ws'

const [base, configText] = process.argv.slice(2)
const config = JSON.parse(configText)
const WAIT_MS = Number(process.env.INTEROP_WAIT_MS || 30000)

function waitFor (condition, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const poll = () => {
      let ok = false
      try { ok = condition() } catch (e) { return reject(e) }
      if (ok) return resolve()
      if (Date.now() - started > WAIT_MS) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(poll, 5)
    }
    poll()
  })
}

const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)))
const json = (doc) => JSON.stringify({ core: sorted(doc.getMap('core').toJSON()), timeline: doc.getArray('timeline').toJSON() })

function wsClient (room) {
  const doc = new Y.Doc()
  const closes = []
  const provider = new WebsocketProvider(`${base}/ws`, room, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true, params: { token: config.wsToken }
  })
  provider.on('connection-close', (event) => { if (event) closes.push(event.code) })
  return { room, doc, provider, closes }
}

const socketCloses = []
let socketOpens = 0
const socket = new HocuspocusProviderWebsocket({
  url: `${base}/mux`,
  WebSocketPolyfill: WebSocket,
  delay: 20, // reconnect quickly after the blip below (default 1 s)
  minDelay: 10,
  onOpen: () => { socketOpens++ },
  onDisconnect: ({ event }) => { if (event.code !== 1005 && event.code !== 1000) socketCloses.push(event.code) }
})
const denied = []

function muxClient (room) {
  const doc = new Y.Doc()
  const client = { room, doc, scope: null, denied: null }
  client.provider = new HocuspocusProvider({
    websocketProvider: socket,
    name: room,
    document: doc,
    token: config.muxToken,
    onAuthenticated: ({ scope }) => { client.scope = scope },
    onAuthenticationFailed: ({ reason }) => { client.denied = reason; denied.push([room, reason]) }
  })
  client.provider.attach()
  return client
}

let result
const debug = {}
try {
  // the weddings are created on /ws (a planner's first update sets the required keys)
  const ws = config.weddings.map(wsClient)
  await waitFor(() => ws.every((c) => c.provider.synced), 'the /ws clients to sync')
  ws.forEach((c, i) => c.doc.transact(() => {
    const core = c.doc.getMap('core')
    core.set('partner_a', `A${i}`); core.set('partner_b', `B${i}`); core.set('status', 'planning')
  }))

  const mux = config.weddings.map(muxClient)
  debug.mux = mux; debug.ws = ws
  await waitFor(() => mux.every((c) => c.provider.synced && c.doc.getMap('core').get('partner_a')),
    'every /mux provider to sync the wedding created on /ws')

  // both sides edit every wedding at once
  mux.forEach((c, i) => c.doc.getMap('core').set('venue', `Venue ${i}`))
  ws.forEach((c, i) => c.doc.getMap('core').set('notes', `Notes ${i}`))
  await waitFor(() => config.weddings.every((_, i) =>
    json(mux[i].doc) === json(ws[i].doc) && mux[i].doc.getMap('core').get('notes') === `Notes ${i}` &&
    ws[i].doc.getMap('core').get('venue') === `Venue ${i}`), 'the two sides to converge')

  // awareness: each provider's state reaches its wedding's /ws client only
  mux.forEach((c) => c.provider.setAwarenessField('user', { wedding: c.room }))
  ws.forEach((c) => c.provider.awareness.setLocalStateField('user', { wedding: c.room, ws: true }))
  const seen = (awareness) => [...awareness.getStates().values()].map((s) => s.user && s.user.wedding).filter(Boolean)
  await waitFor(() => ws.every((c) => seen(c.provider.awareness).filter((w) => w === c.room).length === 2) &&
    mux.every((c) => seen(c.provider.awareness).filter((w) => w === c.room).length === 2),
  'every awareness state to reach its wedding')
  const leaks = [...ws, ...mux].filter((c) => seen(c.provider.awareness).some((w) => w !== c.room)).map((c) => c.room)

  // a late document on the open socket
  const lateWs = wsClient(config.late)
  await waitFor(() => lateWs.provider.synced, 'the late /ws client to sync')
  lateWs.doc.transact(() => {
    const core = lateWs.doc.getMap('core')
    core.set('partner_a', 'Late'); core.set('partner_b', 'Comer'); core.set('status', 'planning')
  })
  const late = muxClient(config.late)
  await waitFor(() => late.provider.synced && late.doc.getMap('core').get('partner_a') === 'Late', 'the late document')
  late.doc.getMap('core').set('venue', 'Late venue')
  await waitFor(() => lateWs.doc.getMap('core').get('venue') === 'Late venue', 'the late edit on /ws')

  // per-document refusals, as a stock provider sees them: the socket and the others carry on
  const outside = muxClient(config.outside)
  const readonly = muxClient(config.readonly)
  await waitFor(() => outside.denied !== null && readonly.scope !== null && readonly.provider.synced,
    'the refused and the read-only documents')
  await waitFor(() => readonly.doc.getMap('core').get('partner_a') === 'RO', 'the read-only wedding')
  readonly.doc.getMap('core').set('venue', 'Viewer Hall')
  await waitFor(() => readonly.doc.getMap('core').get('venue') === undefined, 'the read-only edit undone')
  mux[0].doc.getMap('core').set('guest_count', 99) // the socket still serves the others
  await waitFor(() => ws[0].doc.getMap('core').get('guest_count') === 99, 'an edit after the refusals')

  const all = [...mux, late]
  await waitFor(() => all.every((c) => c.provider.unsyncedChanges === 0), 'every change acknowledged')

  // a network blip: the socket drops; edits made meanwhile arrive once every document resynced
  const opened = socketOpens
  socket.webSocket.close()
  await waitFor(() => all.every((c) => !c.provider.synced), 'every provider saw the loss')
  mux.forEach((c, i) => c.doc.getMap('core').set('ceremony_time', `1${i % 10}:30`))
  await waitFor(() => socketOpens > opened && all.every((c) => c.provider.synced), 'every provider back')
  await waitFor(() => ws.every((c, i) => c.doc.getMap('core').get('ceremony_time') === `1${i % 10}:30`),
    'the offline edits on /ws')
  await waitFor(() => all.every((c) => c.provider.unsyncedChanges === 0), 'the offline edits acknowledged')
  result = {
    ok: true,
    documents: all.length,
    scopes: [...new Set(all.map((c) => c.scope))],
    states: Object.fromEntries(all.map((c) => [c.room, JSON.parse(json(c.doc))])),
    leaks,
    denied,
    outside: { scope: outside.scope, denied: outside.denied },
    readonlyScope: readonly.scope,
    socketCloses,
    wsCloses: [...ws, lateWs].flatMap((c) => c.closes)
  }
  for (const c of [...ws, lateWs]) c.provider.destroy()
  for (const c of [...all, outside, readonly]) c.provider.destroy()
  socket.destroy()
} catch (error) {
  result = { ok: false, error: String(error), denied, socketCloses, first: debug.mux && [json(debug.mux[0].doc), json(debug.ws[0].doc), debug.mux[0].provider.unsyncedChanges] }
}
console.log(JSON.stringify(result))
process.exit(result.ok ? 0 : 1)
