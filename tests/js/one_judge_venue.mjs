// One judge per wedding (issue 12), race 1: a couple on one node and a vendor on another set
// `core.venue` in the same tick, round after round. The vendor may not write core fields
// (proto/spec.md §7): its write is refused and undone. The couple's write is valid and must
// survive every round, on every replica, a late joiner's included.
//
// Each round has its own couple and vendor clients (fresh Yjs client ids); one more couple client
// creates the wedding and stays connected throughout.
// Usage: node one_judge_venue.mjs COUPLE_NODE_URL ROOM --vendor-url URL --couple TOKEN
//          --vendor TOKEN --viewer TOKEN --late-urls URL,URL --rounds N
// Prints one JSON line: {ok, rounds: [{round, expected, couple, vendor, late, lateUrl,
// reverted, vendorUndone}], failure: null | {round, error, clients}}. The Python test asserts.
import {
  run, makeClient, waitSynced, waitFor, waitConverged, docJson, report, closeAll
} from '../interop/js/lib.mjs'

const venueOf = (client) => client.doc.getMap('core').get('venue')

run(async ({ url, room, options }) => {
  const rounds = Number(options.rounds)
  const lateUrls = String(options['late-urls']).split(',')
  const creator = makeClient(url, room, 'creator', { params: { token: options.couple } })
  await waitSynced(creator)
  creator.doc.transact(() => {
    const core = creator.doc.getMap('core')
    core.set('partner_a', 'Ana Silva'); core.set('partner_b', 'Bea Costa')
    core.set('status', 'confirmed'); core.set('venue', 'Venue-0')
  })

  const results = []
  let failure = null
  for (let n = 1; n <= rounds && failure === null; n++) {
    // A fresh couple and vendor each round, so fresh random Yjs client ids: the ids decide which
    // of two concurrent writes to a key wins, and no outcome may depend on them.
    const couple = makeClient(url, room, `couple-${n}`, { params: { token: options.couple } })
    const vendor = makeClient(options['vendor-url'], room, `vendor-${n}`,
      { params: { token: options.vendor } })
    const clients = [couple, vendor]
    const lateUrl = lateUrls[n % lateUrls.length]
    try {
      await Promise.all(clients.map((c) => waitSynced(c)))
      const before = n === 1 ? 'Venue-0' : results[n - 2].couple
      await waitFor(() => clients.every((c) => venueOf(c) === before),
        `round ${n}: both clients to start from ${before}`)
      // The same tick: both updates leave before either node can have seen the other's.
      couple.doc.getMap('core').set('venue', `Venue-${n}`)
      vendor.doc.getMap('core').set('venue', `Vendor-venue-${n}`)
      await waitConverged(clients) // same JSON, state vector and delete set
      const late = makeClient(lateUrl, room, `late-${n}`, { params: { token: options.viewer } })
      clients.push(late)
      await waitSynced(late)
      await waitConverged(clients)
      results.push({
        round: n,
        expected: `Venue-${n}`,
        couple: venueOf(couple),
        vendor: venueOf(vendor),
        late: venueOf(late),
        lateUrl,
        reverted: venueOf(couple) !== `Venue-${n}`,
        vendorUndone: clients.every((c) => venueOf(c) !== `Vendor-venue-${n}`),
        closes: clients.flatMap((c) => c.closes)
      })
    } catch (error) {
      failure = { round: n, error: String(error.stack || error), clients: clients.map(report) }
    }
    await closeAll(clients)
  }
  await waitFor(() => venueOf(creator) === (results.at(-1)?.couple ?? 'Venue-0'),
    'the creator (connected throughout) to hold the last venue')
  const final = docJson(creator.doc)
  await closeAll([creator])
  return { rounds: results, failure, final }
})
