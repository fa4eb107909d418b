// Stock yjs + y-websocket clients with tokens (?token= through the provider's params): a planner
// creates the wedding, a vendor edits its own entry (accepted) and, in the same session, the
// wedding date and another vendor's entry (refused). The gateway undoes the refused changes on
// every replica, the vendor's own included, although a stock client knows no extension message.
// Usage: node stock_roles.mjs WS_URL ROOM PLANNER_TOKEN VENDOR_TOKEN  → prints one JSON line.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [url, room, plannerToken, vendorToken] = process.argv.slice(2)
const WAIT_MS = 15000

function client (token) {
  const doc = new Y.Doc()
  const closes = []
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true, params: { token }
  })
  provider.on('connection-close', (event) => { if (event) closes.push(event.code) })
  return { doc, provider, closes }
}

function waitFor (condition, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const poll = () => {
      if (condition()) return resolve()
      if (Date.now() - started > WAIT_MS) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(poll, 5)
    }
    poll()
  })
}

const state = (c) => ({ core: c.doc.getMap('core').toJSON(), timeline: c.doc.getArray('timeline').toJSON() })
const entry = (c, id) => c.doc.getArray('timeline').toArray().find((e) => e.get('id') === id)

const planner = client(plannerToken)
await waitFor(() => planner.provider.synced, 'the planner to sync')
planner.doc.transact(() => {
  const core = planner.doc.getMap('core')
  core.set('partner_a', 'Ana'); core.set('partner_b', 'Bea'); core.set('status', 'confirmed')
  const timeline = planner.doc.getArray('timeline')
  for (const [id, vendor] of [['dinner', 'caterer-42'], ['flowers', 'florist-7']]) {
    const item = new Y.Map()
    item.set('id', id); item.set('title', id); item.set('start', '18:00'); item.set('vendor_id', vendor)
    timeline.push([item])
  }
})

const vendor = client(vendorToken)
await waitFor(() => vendor.provider.synced && vendor.doc.getArray('timeline').length === 2,
  'the vendor to receive the wedding')
entry(vendor, 'dinner').set('notes', 'Two vegan menus') // its own entry: accepted
vendor.doc.getMap('core').set('wedding_date', '2099-01-01') // a core field: refused
entry(vendor, 'flowers').set('notes', 'Cancelled!') // another vendor's entry: refused
entry(vendor, 'dinner').set('location', 'Terrace') // allowed again, after the refusals

const same = () => JSON.stringify(state(planner)) === JSON.stringify(state(vendor))
await waitFor(() => entry(planner, 'dinner').get('location') === 'Terrace' && same() &&
  !vendor.doc.getMap('core').has('wedding_date') && entry(vendor, 'flowers').get('notes') === undefined,
'both replicas to converge without the refused changes')
console.log(JSON.stringify({
  planner: state(planner), vendor: state(vendor), closes: [...planner.closes, ...vendor.closes]
}))
planner.provider.destroy()
vendor.provider.destroy()
process.exit(0)
