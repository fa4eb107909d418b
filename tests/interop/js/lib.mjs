// Shared helpers for the interop scripts: stock yjs + y-websocket clients against the gateway.
//
// Every script is run as `node <script>.mjs <server base url> <wedding id> [options]`, prints one
// JSON object on stdout (the last line) and exits 0 when every check held, 1 otherwise.
// Synchronisation is by condition (provider events, document contents polled with a deadline),
// never by sleeping for a fixed time.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export { Y }

/** How long any single wait may take before the script fails (ms). */
export const WAIT_MS = Number(process.env.INTEROP_WAIT_MS || 5000)

/** Parse `<url> <wedding id> [--flag value | --switch]...`. */
export function parseArgs (argv = process.argv.slice(2)) {
  const [url, room, ...rest] = argv
  if (!url || !room) {
    throw new Error('usage: node <script>.mjs <server base url> <wedding id> [options]')
  }
  const options = {}
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`)
    const key = arg.slice(2)
    const next = rest[i + 1]
    if (next === undefined || next.startsWith('--')) {
      options[key] = true
    } else {
      options[key] = next
      i++
    }
  }
  return { url, room, options }
}

/**
 * A stock WebsocketProvider client. BroadcastChannel is disabled: providers in one Node process
 * would otherwise sync with each other directly and the server would not be tested. `params`
 * become the URL's query (a token).
 */
export function makeClient (url, room, name, { connect = true, params = {} } = {}) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    connect,
    params // ?token=... for a gateway that checks tokens (proto/spec.md §2.4)
  })
  const client = { name, doc, provider, closes: [], errors: [], updates: 0 }
  provider.on('connection-close', (event) => {
    if (event) client.closes.push({ code: event.code, reason: String(event.reason || '') })
  })
  provider.on('connection-error', (event) => {
    client.errors.push(String(event && (event.message || event.type)))
  })
  doc.on('update', () => { client.updates++ })
  return client
}

/** Resolve once `check()` is truthy; poll with a deadline. Rejects with `what` on timeout. */
export async function waitFor (check, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs
  let delay = 1
  while (true) {
    const value = check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, delay)) // polls a condition
    delay = Math.min(delay * 2, 20)
  }
}

/** Resolve when the provider has finished its sync handshake with the server ('sync' event). */
export function waitSynced (client, timeoutMs = WAIT_MS) {
  if (client.provider.synced) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.provider.off('sync', onSync)
      reject(new Error(`${client.name} did not sync within ${timeoutMs} ms ` +
        `(closes: ${JSON.stringify(client.closes)}, errors: ${JSON.stringify(client.errors)})`))
    }, timeoutMs)
    const onSync = (state) => {
      if (!state) return
      clearTimeout(timer)
      client.provider.off('sync', onSync)
      resolve()
    }
    client.provider.on('sync', onSync)
  })
}

/** Resolve with the status once the provider reports `status` ('connected', 'disconnected'). */
export function waitStatus (client, status, timeoutMs = WAIT_MS) {
  return waitFor(() => {
    const connected = client.provider.wsconnected
    return status === 'connected' ? connected : !connected && client.provider.ws === null
  }, `${client.name} to be ${status}`, timeoutMs)
}

// -- the wedding document ----------------------------------------------------------------------

/** Root types of a wedding: Y.Map 'core' and Y.Array 'timeline' of Y.Map. */
export function roots (doc) {
  return { core: doc.getMap('core'), timeline: doc.getArray('timeline') }
}

/** The core fields every wedding holds from its first update (proto/schema.md). */
export const COUPLE = Object.freeze({
  partner_a: 'Ada Lovelace', partner_b: 'Grace Hopper', status: 'planning'
})

/**
 * Create the wedding: set the required core fields (and `fields`) in one transaction. The
 * gateway refuses a core write to a wedding that lacks them unless the same update sets them all
 * (proto/schema.md).
 */
export function createWedding (doc, fields = {}) {
  doc.transact(() => {
    const core = doc.getMap('core')
    for (const [key, value] of Object.entries({ ...COUPLE, ...fields })) core.set(key, value)
  })
}

/**
 * Append a timeline entry (a Y.Map) in one transaction. `fields` must be a valid entry of
 * proto/schema.md (id, title and start "HH:MM" at least), or the gateway undoes it.
 */
export function addEvent (doc, fields) {
  doc.transact(() => {
    const item = new Y.Map()
    for (const [key, value] of Object.entries(fields)) item.set(key, value)
    doc.getArray('timeline').push([item])
  })
}

/** The document as plain JSON: what the tests compare. */
export function docJson (doc) {
  const { core, timeline } = roots(doc)
  return { core: core.toJSON(), timeline: timeline.toJSON() }
}

/** JSON with object keys sorted: Y.Map key order follows integration order, which may differ. */
export function canonical (value) {
  return JSON.stringify(value, (_key, v) => {
    if (typeof v === 'bigint') return Number(v)
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    }
    return v
  })
}

/**
 * The encoded state vector, and its decoded form as {client id: clock}. The byte encoding lists
 * clients in the order the document met them, so equal documents may encode it differently;
 * comparisons use the decoded form.
 */
export function stateVector (doc) {
  const encoded = Y.encodeStateVector(doc)
  const decoded = {}
  for (const [clientId, clock] of Y.decodeStateVector(encoded)) decoded[String(clientId)] = clock
  return { encoded: Buffer.from(encoded).toString('base64'), decoded: sortKeys(decoded) }
}

function sortKeys (object) {
  return Object.fromEntries(Object.keys(object).sort().map((k) => [k, object[k]]))
}

/** What a script reports for one client. */
export function report (client) {
  const sv = stateVector(client.doc)
  return {
    name: client.name,
    clientId: client.doc.clientID,
    json: JSON.parse(canonical(docJson(client.doc))),
    stateVector: sv.decoded,
    stateVectorBase64: sv.encoded,
    updateBase64: Buffer.from(Y.encodeStateAsUpdate(client.doc)).toString('base64'),
    closes: client.closes,
    errors: client.errors
  }
}

/**
 * Why `clients` have not converged, or null when they have: same JSON, same decoded state vector,
 * and equal Yjs snapshots (state vector and delete set).
 */
export function divergence (clients) {
  const [first, ...rest] = clients
  const json = canonical(docJson(first.doc))
  const sv = canonical(stateVector(first.doc).decoded)
  const snapshot = Y.snapshot(first.doc)
  for (const other of rest) {
    const otherJson = canonical(docJson(other.doc))
    if (otherJson !== json) {
      return `${first.name} has ${clip(json)} but ${other.name} has ${clip(otherJson)}`
    }
    const otherSv = canonical(stateVector(other.doc).decoded)
    if (otherSv !== sv) {
      return `state vectors differ: ${first.name} ${sv}, ${other.name} ${otherSv}`
    }
    if (!Y.equalSnapshots(snapshot, Y.snapshot(other.doc))) {
      return `snapshots (delete sets) differ between ${first.name} and ${other.name}`
    }
  }
  return null
}

const clip = (text, n = 400) => text.length > n ? `${text.slice(0, n)}... (${text.length} chars)` : text

/** Resolve once every client has the same document; reject with the last difference. */
export async function waitConverged (clients, timeoutMs = WAIT_MS) {
  let last = null
  try {
    await waitFor(() => {
      last = divergence(clients)
      return last === null
    }, 'convergence', timeoutMs)
  } catch (error) {
    throw new Error(`${error.message}: ${last}`)
  }
}

/** Fail with `message` unless `condition` holds. */
export function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

// -- running a script --------------------------------------------------------------------------

/**
 * Run `scenario(args)`, which returns the result object; print it as JSON and exit. Any error
 * prints {ok: false, error} and exits 1. Every client made with `makeClient` and passed to
 * `track` is destroyed before exiting.
 */
export async function run (scenario) {
  const tracked = []
  const track = (client) => { tracked.push(client); return client }
  const watchdog = setTimeout(() => {
    process.stdout.write(canonical({ ok: false, error: 'script watchdog expired' }) + '\n')
    process.exit(1)
  }, Number(process.env.INTEROP_SCRIPT_MS || 30000))
  watchdog.unref()
  let result
  let code = 0
  try {
    result = { ok: true, ...(await scenario({ ...parseArgs(), track })) }
  } catch (error) {
    result = {
      ok: false,
      error: String(error && error.stack ? error.stack : error),
      clients: tracked.map(report)
    }
    code = 1
  }
  await closeAll(tracked)
  process.stdout.write(canonical(result) + '\n', () => process.exit(code))
}

/**
 * Destroy the providers and wait (with a deadline) for their sockets' closing handshakes: the
 * server has then read every message sent before the close frame.
 */
export async function closeAll (clients) {
  const sockets = clients.map((c) => c.provider.ws).filter(Boolean)
  for (const client of clients) client.provider.destroy()
  try {
    await waitFor(() => sockets.every((s) => s.readyState === WebSocket.CLOSED), 'sockets to close')
  } catch {
    // the result is already decided; the server drops half-closed sockets by itself
  }
}
