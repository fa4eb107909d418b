// Scenario 2: one client goes offline (provider.disconnect()), both sides edit, it reconnects
// (provider.connect()) and everyone converges.
import {
  run, makeClient, waitSynced, waitConverged, waitStatus, addEvent, roots, check, report,
  divergence, docJson, canonical
} from './lib.mjs'

run(async ({ url, room, options, track }) => {
  const edits = Number(options.edits || 10)
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])
  addEvent(a.doc, { id: 'dinner', title: 'Dinner', at: '19:00' })
  roots(b.doc).core.set('couple', 'Ada & Grace')
  await waitConverged([a, b])

  // a goes offline.
  a.provider.disconnect()
  await waitStatus(a, 'disconnected')

  // Both sides edit while a is offline, including conflicting edits of the same entry and key.
  for (let i = 0; i < edits; i++) {
    addEvent(a.doc, { id: `a-offline-${i}`, by: 'a', i })
    addEvent(b.doc, { id: `b-online-${i}`, by: 'b', i })
    roots(a.doc).core.set(`a-${i}`, i)
    roots(b.doc).core.set(`b-${i}`, i)
  }
  roots(a.doc).core.set('venue', 'Lakeside (a, offline)')
  roots(b.doc).core.set('venue', 'Hilltop (b, online)')
  roots(a.doc).timeline.get(0).set('at', '19:30')
  roots(b.doc).timeline.delete(0, 1) // b deletes the entry a edits offline
  const c = track(makeClient(url, room, 'c')) // an online witness: b's edits reached the server
  await waitSynced(c)
  await waitConverged([b, c])

  // a really was cut off: it has none of b's offline-time edits, and b has none of a's.
  check(divergence([a, b]) !== null, 'a and b differ while a is offline')
  check(!('b-0' in roots(a.doc).core.toJSON()), 'a did not receive b\'s edits while offline')
  check(!('a-0' in roots(b.doc).core.toJSON()), 'b did not receive a\'s edits while offline')
  const offlineA = canonical(docJson(a.doc))

  // a comes back.
  a.provider.connect()
  await waitSynced(a)
  await waitConverged([a, b, c])

  const core = roots(a.doc).core
  for (let i = 0; i < edits; i++) {
    check(core.get(`a-${i}`) === i && core.get(`b-${i}`) === i, `offline edit ${i} of both sides`)
  }
  const ids = roots(a.doc).timeline.toArray().map((m) => m.get('id'))
  check(!ids.includes('dinner'), 'the entry b deleted stays deleted after a edited it offline')
  check(ids.filter((id) => id.startsWith('a-offline-')).length === edits, 'a\'s offline entries')
  check(ids.filter((id) => id.startsWith('b-online-')).length === edits, 'b\'s entries')
  check(['Lakeside (a, offline)', 'Hilltop (b, online)'].includes(core.get('venue')), 'venue')
  return { offlineA: JSON.parse(offlineA), clients: [report(a), report(b), report(c)] }
})
