// Scenario 1: two stock clients edit one wedding concurrently and converge.
//
// Each batch edits from both clients in the same turn of the event loop, so neither has seen the
// other's batch when making its own: every pair of edits in a batch is concurrent. Between
// batches the clients converge, so later batches can conflict over entries both know.
// Everything written is a valid wedding (proto/schema.md): the gateway undoes anything else.
import {
  run, makeClient, waitSynced, waitConverged, addEvent, createWedding, roots, check, report
} from './lib.mjs'

const indexOf = (doc, id) => roots(doc).timeline.toArray().findIndex((m) => m.get('id') === id)

// Each client's own core key: concurrent edits of different keys of one map must merge.
const NOTE = { a: 'notes', b: 'venue_address' }

run(async ({ url, room, options, track }) => {
  const batches = Number(options.batches || 4)
  const perBatch = Number(options.edits || 5)
  const a = track(makeClient(url, room, 'a'))
  const b = track(makeClient(url, room, 'b'))
  await Promise.all([waitSynced(a), waitSynced(b)])

  createWedding(a.doc, { guest_count: 0 })
  addEvent(a.doc, { id: 'ceremony', title: 'Ceremony', start: '15:00' })
  await waitConverged([a, b])

  for (let batch = 0; batch < batches; batch++) {
    for (let i = 0; i < perBatch; i++) {
      for (const client of [a, b]) {
        const { core, timeline } = roots(client.doc)
        client.doc.transact(() => {
          core.set('venue', `${client.name}-venue-${batch}-${i}`) // same key from both sides
          core.set(NOTE[client.name], `${client.name}-note-${batch}-${i}`) // different keys
          timeline.get(0).set('title', `Ceremony (${client.name} ${batch}.${i})`)
        })
        addEvent(client.doc, {
          id: `${client.name}-${batch}-${i}`, title: `${client.name} ${batch}.${i}`, start: '16:00'
        })
      }
    }
    if (batch > 0) {
      // Conflicts over entries both clients know (from the previous batch):
      const prev = batch - 1
      // both delete the same entry,
      for (const client of [a, b]) {
        roots(client.doc).timeline.delete(indexOf(client.doc, `a-${prev}-0`), 1)
      }
      // a deletes an entry while b edits it,
      roots(a.doc).timeline.delete(indexOf(a.doc, `b-${prev}-1`), 1)
      roots(b.doc).timeline.get(indexOf(b.doc, `b-${prev}-1`)).set('title', 'edited while deleted')
      // and a map key both know is deleted on one side while set again on the other.
      roots(a.doc).core.delete('guest_count')
      roots(b.doc).core.set('guest_count', batch)
    }
    await waitConverged([a, b])
  }

  const { core, timeline } = roots(a.doc)
  const last = batches - 1
  check(String(core.get('venue')).endsWith(`-venue-${last}-${perBatch - 1}`), 'venue is a last write')
  for (const name of ['a', 'b']) {
    check(core.get(NOTE[name]) === `${name}-note-${last}-${perBatch - 1}`, `${name}'s last note`)
    check(indexOf(a.doc, `${name}-${last}-${perBatch - 1}`) >= 0, `${name}'s last timeline item`)
  }
  if (batches > 1) {
    check(indexOf(a.doc, 'a-0-0') === -1, 'an entry deleted by both sides is gone')
    check(indexOf(a.doc, 'b-0-1') === -1, 'a deleted entry stays deleted despite a concurrent edit')
    check(core.get('guest_count') === last, 'a set wins over a concurrent delete of the old value')
  }
  check(timeline.length === 1 + batches * perBatch * 2 - (batches - 1) * 2, 'timeline length')
  check(timeline.get(0).get('id') === 'ceremony', 'ceremony entry is first')
  return { clients: [report(a), report(b)] }
})
