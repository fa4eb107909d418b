// One stock client, driven by options, for tests where another program (a Python pycrdt client,
// or another script) is the other side.
//
//   node client.mjs <url> <wedding id> [--name N] [--awareness JSON] [--edits TAG] [--count N]
//                   [--mark ID] [--await-mark ID] [--hold]
//
// Connects and syncs, prints {"event":"synced",...}; sets its awareness state; makes COUNT edits
// tagged TAG (a timeline entry TAG-i and a write of core.venue each; the first creates the
// wedding if it has no couple yet); adds the timeline entry MARK (a signal to the other side);
// waits until the timeline has the entry AWAIT-MARK; with --hold, stays connected until stdin
// closes. The last line printed is the result, with this client's final document. Everything
// written is a valid wedding (proto/schema.md): the gateway undoes anything else.
import {
  run, makeClient, waitSynced, waitFor, addEvent, createWedding, roots, report, canonical
} from './lib.mjs'

const emit = (object) => process.stdout.write(canonical(object) + '\n')
const hasEntry = (doc, id) => roots(doc).timeline.toArray().some((m) => m.get('id') === id)

run(async ({ url, room, options, track }) => {
  const client = track(makeClient(url, room, options.name || 'js'))
  const { doc } = client
  await waitSynced(client)
  emit({ event: 'synced', clientId: doc.clientID })
  if (typeof options.awareness === 'string') {
    client.provider.awareness.setLocalState(JSON.parse(options.awareness))
  }
  if (typeof options.edits === 'string') {
    const tag = options.edits
    const count = Number(options.count || 10)
    for (let i = 0; i < count; i++) {
      addEvent(doc, { id: `${tag}-${i}`, title: `${tag} item ${i}`, start: '16:00' })
      const venue = `${tag}-venue-${i}`
      const { core } = roots(doc)
      if (core.has('partner_a')) core.set('venue', venue)
      else createWedding(doc, { venue }) // a wedding's first core write sets the couple too
    }
  }
  if (typeof options.mark === 'string') {
    addEvent(doc, { id: options.mark, title: `${client.name} is done`, start: '23:59' })
  }
  if (typeof options['await-mark'] === 'string') {
    const id = options['await-mark']
    await waitFor(() => hasEntry(doc, id), `timeline entry ${id}`)
  }
  if (options.hold) {
    emit({ event: 'holding', clientId: doc.clientID })
    await new Promise((resolve) => {
      process.stdin.on('end', resolve)
      process.stdin.on('close', resolve)
      process.stdin.resume()
    })
  }
  return { clients: [report(client)] }
})
