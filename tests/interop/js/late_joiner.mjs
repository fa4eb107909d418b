// Scenario 3: a client that joins later receives the full state in the sync handshake.
// Everything written is a valid wedding (proto/schema.md): the gateway undoes anything else.
import {
  run, makeClient, waitSynced, waitConverged, addEvent, createWedding, roots, check, report,
  divergence, closeAll
} from './lib.mjs'

run(async ({ url, room, options, track }) => {
  const edits = Number(options.edits || 25)
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])
  createWedding(b.doc)
  for (let i = 0; i < edits; i++) {
    addEvent(a.doc, { id: `a-${i}`, title: `Item ${i}`, start: '16:00' })
    roots(b.doc).core.set('guest_count', 100 + i) // overwritten values: tombstones
    roots(b.doc).core.set('notes', `Guest ${i} replied`)
  }
  roots(a.doc).timeline.delete(0, 1)
  roots(b.doc).core.delete('notes')
  await waitConverged([a, b])

  // c joins now. When its provider reports 'sync' it has everything, without further waiting.
  const c = track(makeClient(url, room, 'c'))
  await waitSynced(c)
  const atSync = divergence([a, c])
  check(atSync === null, `the late joiner has the full state when synced: ${atSync}`)

  // The late joiner takes part like anyone else.
  addEvent(c.doc, { id: 'c-late', title: 'Late', start: '23:00' })
  await waitConverged([a, b, c])

  // With a and b gone, d joins and gets the same state from the server alone.
  await closeAll([a, b])
  const d = track(makeClient(url, room, 'd'))
  await waitSynced(d)
  const atSyncD = divergence([c, d])
  check(atSyncD === null, `a joiner after the others left has the full state: ${atSyncD}`)
  const ids = roots(d.doc).timeline.toArray().map((m) => m.get('id'))
  check(ids.length === edits && ids.at(-1) === 'c-late' && !ids.includes('a-0'), 'timeline')
  const dCore = roots(d.doc).core
  check(!dCore.has('notes') && dCore.get('guest_count') === 100 + edits - 1, 'core')
  return { clients: [report(c), report(d)], departed: [report(a), report(b)] }
})
