// One judge per wedding (issue 12), race 2: three planners, each on its own node, in a fresh
// wedding per round. Planner A creates the wedding and sets `guest_count`; planners B and C set
// `guest_count` in the same tick, as soon as they are connected (not after seeing A's creation).
// Whichever writes a node judges valid or not, A's write is valid: the converged document must
// hold a guest count, on every replica and a late joiner.
//
// Usage: node one_judge_guest_count.mjs NODE_A_URL ROOM_PREFIX --b-url URL --c-url URL
//          --late-urls URL,URL,URL --rounds N
// Prints one JSON line: {ok, rounds: [{round, room, core, lost, lateUrl, closes}],
// failure: null | {round, error, clients}}. The Python test asserts.
import {
  run, makeClient, waitSynced, waitFor, waitConverged, createWedding, report, closeAll
} from '../interop/js/lib.mjs'

const WRITES = Object.freeze({ a: 120, b: 200, c: 300 })

run(async ({ url, room: prefix, options }) => {
  const rounds = Number(options.rounds)
  const lateUrls = String(options['late-urls']).split(',')
  const results = []
  let failure = null
  for (let n = 1; n <= rounds && failure === null; n++) {
    const room = `${prefix}-${n}`
    const a = makeClient(url, room, 'a')
    const b = makeClient(options['b-url'], room, 'b')
    const c = makeClient(options['c-url'], room, 'c')
    const clients = [a, b, c]
    const lateUrl = lateUrls[n % lateUrls.length]
    try {
      await Promise.all(clients.map((client) => waitSynced(client)))
      // The same tick: no node can have seen A's creation when B's and C's writes reach it.
      createWedding(a.doc)
      a.doc.getMap('core').set('guest_count', WRITES.a)
      b.doc.getMap('core').set('guest_count', WRITES.b)
      c.doc.getMap('core').set('guest_count', WRITES.c)
      // Converged only once the creation reached everyone: B's and C's documents lacked it.
      await waitFor(() => clients.every((x) => x.doc.getMap('core').has('partner_a')),
        `round ${n}: A's creation to reach every planner`)
      await waitConverged(clients)
      const late = makeClient(lateUrl, room, `late-${n}`)
      clients.push(late)
      await waitSynced(late)
      await waitConverged(clients)
      const core = a.doc.getMap('core').toJSON()
      results.push({
        round: n, room, core, lost: !('guest_count' in core), lateUrl,
        closes: clients.flatMap((x) => x.closes)
      })
    } catch (error) {
      failure = { round: n, error: String(error.stack || error), clients: clients.map(report) }
    }
    await closeAll(clients)
  }
  return { rounds: results, failure }
})
