// Scenario 3: a client that joins later receives the full state in the sync handshake.
import {
  run, makeClient, waitSynced, waitConverged, addEvent, roots, check, report, divergence, closeAll
} from './lib.mjs'

run(async ({ url, room, options, track }) => {
  const edits = Number(options.edits || 25)
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])
  for (let i = 0; i < edits; i++) {
    addEvent(a.doc, { id: `a-${i}`, by: 'a', i })
    roots(b.doc).core.set(`guest-${i}`, { name: `Guest ${i}`, rsvp: i % 2 === 0 })
  }
  roots(a.doc).timeline.delete(0, 1)
  roots(b.doc).core.delete('guest-0')
  await waitConverged([a, b])

  // c joins now. When its provider reports 'sync' it has everything, without further waiting.
  const c = track(makeClient(url, room, 'c'))
  await waitSynced(c)
  const atSync = divergence([a, c])
  check(atSync === null, `the late joiner has the full state when synced: ${atSync}`)

  // The late joiner takes part like anyone else.
  addEvent(c.doc, { id: 'c-late', by: 'c' })
  await waitConverged([a, b, c])

  // With a and b gone, d joins and gets the same state from the server alone.
  await closeAll([a, b])
  const d = track(makeClient(url, room, 'd'))
  await waitSynced(d)
  const atSyncD = divergence([c, d])
  check(atSyncD === null, `a joiner after the others left has the full state: ${atSyncD}`)
  const ids = roots(d.doc).timeline.toArray().map((m) => m.get('id'))
  check(ids.length === edits && ids.at(-1) === 'c-late' && !ids.includes('a-0'), 'timeline')
  check(!roots(d.doc).core.has('guest-0') && roots(d.doc).core.has(`guest-${edits - 1}`), 'guests')
  return { clients: [report(c), report(d)], departed: [report(a), report(b)] }
})
