// Awareness through the gateway: a client's state reaches the others, updates follow, a late
// joiner receives the current states, and a state is removed at the others when its provider is
// destroyed (goodbye message) or when its process dies without a goodbye (the server's job).
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { run, makeClient, waitSynced, waitFor, check, canonical, WAIT_MS } from './lib.mjs'

const stateOf = (observer, clientId) => observer.provider.awareness.getStates().get(clientId)
const same = (x, y) => x !== undefined && canonical(x) === canonical(y)

async function sees (observer, clientId, state) {
  await waitFor(() => same(stateOf(observer, clientId), state),
    `${observer.name} to see state ${canonical(state)} of client ${clientId}; it has ` +
    canonical(Object.fromEntries(observer.provider.awareness.getStates())))
}

async function forgets (observer, clientId) {
  await waitFor(() => !observer.provider.awareness.getStates().has(clientId),
    `${observer.name} to drop the awareness state of client ${clientId}`)
}

/** A client in its own process: killing it drops its socket without an awareness goodbye. */
async function spawnClient (url, room, state) {
  const script = fileURLToPath(new URL('./client.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, url, room, '--name', 'crash', '--awareness',
    JSON.stringify(state), '--hold'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })
  const clientId = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child client did not sync')), WAIT_MS)
    lines.on('line', (line) => {
      const message = JSON.parse(line)
      if (message.event === 'holding') { clearTimeout(timer); resolve(message.clientId) }
    })
    child.on('exit', (code) => reject(new Error(`child client exited with ${code}`)))
  })
  return { child, clientId }
}

run(async ({ url, room, track }) => {
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])
  const ada = { user: { name: 'Ada', color: '#ff0000' }, cursor: null }
  const bea = { user: { name: 'Bea', color: '#0000ff' }, cursor: { anchor: 3 } }
  a.provider.awareness.setLocalState(ada)
  b.provider.awareness.setLocalState(bea)
  await sees(b, a.doc.clientID, ada)
  await sees(a, b.doc.clientID, bea)

  const moved = { ...ada, cursor: { anchor: 7, head: 9 } }
  a.provider.awareness.setLocalState(moved)
  await sees(b, a.doc.clientID, moved)

  // A late joiner receives the current states from the server.
  const c = track(makeClient(url, room, 'c'))
  await waitSynced(c)
  await sees(c, a.doc.clientID, moved)
  await sees(c, b.doc.clientID, bea)
  const cy = { user: { name: 'Cy' } }
  c.provider.awareness.setLocalState(cy)
  await sees(b, c.doc.clientID, cy)

  // A client process that dies: the server removes its state for the others.
  const crashState = { user: { name: 'Crash' } }
  const { child, clientId: crashId } = await spawnClient(url, room, crashState)
  await sees(a, crashId, crashState)
  await sees(c, crashId, crashState)
  const exited = new Promise((resolve) => child.on('exit', resolve))
  child.kill('SIGKILL')
  await exited
  await forgets(a, crashId)
  await forgets(c, crashId)

  // A destroyed provider: removed at the others.
  const aId = a.doc.clientID
  a.provider.destroy()
  await forgets(b, aId)
  await forgets(c, aId)
  check(same(stateOf(c, b.doc.clientID), bea), 'c still sees b')
  check(same(stateOf(b, c.doc.clientID), cy), 'b still sees c')

  return {
    awareness: {
      b: Object.fromEntries(b.provider.awareness.getStates()),
      c: Object.fromEntries(c.provider.awareness.getStates())
    },
    clientIds: { a: aId, b: b.doc.clientID, c: c.doc.clientID, crash: crashId }
  }
})
