// Scenario 2: one client goes offline (provider.disconnect()), both sides edit, it reconnects
// (provider.connect()) and everyone converges. Everything written is a valid wedding
// (proto/schema.md): the gateway undoes anything else.
import {
  run, makeClient, waitSynced, waitConverged, waitStatus, addEvent, createWedding, roots, check,
  report, divergence, docJson, canonical
} from './lib.mjs'

const entry = (doc, id) => roots(doc).timeline.toArray().find((m) => m.get('id') === id)

run(async ({ url, room, options, track }) => {
  const edits = Number(options.edits || 10)
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])
  addEvent(a.doc, { id: 'dinner', title: 'Dinner', start: '19:00' })
  createWedding(b.doc)
  await waitConverged([a, b])

  // a goes offline.
  a.provider.disconnect()
  await waitStatus(a, 'disconnected')

  // Both sides edit while a is offline: each adds entries and then edits them, each writes its
  // own core key, and they make conflicting edits of the same entry and key.
  for (let i = 0; i < edits; i++) {
    addEvent(a.doc, { id: `a-offline-${i}`, title: `a ${i}`, start: '20:00' })
    addEvent(b.doc, { id: `b-online-${i}`, title: `b ${i}`, start: '20:00' })
    entry(a.doc, `a-offline-${i}`).set('notes', `a-${i}`)
    entry(b.doc, `b-online-${i}`).set('notes', `b-${i}`)
    roots(a.doc).core.set('notes', `a-${i}`)
    roots(b.doc).core.set('guest_count', i)
  }
  roots(a.doc).core.set('venue', 'Lakeside (a, offline)')
  roots(b.doc).core.set('venue', 'Hilltop (b, online)')
  roots(a.doc).timeline.get(0).set('start', '19:30')
  roots(b.doc).timeline.delete(0, 1) // b deletes the entry a edits offline
  const c = track(makeClient(url, room, 'c')) // an online witness: b's edits reached the server
  await waitSynced(c)
  await waitConverged([b, c])

  // a really was cut off: it has none of b's offline-time edits, and b has none of a's.
  check(divergence([a, b]) !== null, 'a and b differ while a is offline')
  check(!roots(a.doc).core.has('guest_count'), 'a did not receive b\'s edits while offline')
  check(!roots(b.doc).core.has('notes'), 'b did not receive a\'s edits while offline')
  const offlineA = canonical(docJson(a.doc))

  // a comes back.
  a.provider.connect()
  await waitSynced(a)
  await waitConverged([a, b, c])

  const core = roots(a.doc).core
  for (let i = 0; i < edits; i++) {
    const mine = entry(a.doc, `a-offline-${i}`)?.get('notes')
    const theirs = entry(a.doc, `b-online-${i}`)?.get('notes')
    check(mine === `a-${i}` && theirs === `b-${i}`, `offline edit ${i} of both sides`)
  }
  check(core.get('notes') === `a-${edits - 1}`, 'a\'s offline writes to its core key')
  check(core.get('guest_count') === edits - 1, 'b\'s writes to its core key')
  const ids = roots(a.doc).timeline.toArray().map((m) => m.get('id'))
  check(!ids.includes('dinner'), 'the entry b deleted stays deleted after a edited it offline')
  check(ids.filter((id) => id.startsWith('a-offline-')).length === edits, 'a\'s offline entries')
  check(ids.filter((id) => id.startsWith('b-online-')).length === edits, 'b\'s entries')
  check(['Lakeside (a, offline)', 'Hilltop (b, online)'].includes(core.get('venue')), 'venue')
  return { offlineA: JSON.parse(offlineA), clients: [report(a), report(b), report(c)] }
})
