// One stock client, driven by options, for tests where another program (a Python pycrdt client,
// or another script) is the other side.
//
//   node client.mjs <url> <wedding id> [--name N] [--awareness JSON] [--edits TAG] [--count N]
//                   [--set-key KEY] [--await-key KEY] [--hold]
//
// Connects and syncs, prints {"event":"synced",...}; sets its awareness state; makes COUNT edits
// tagged TAG (a timeline entry and a 'core' key each); sets core[SET-KEY] = true; waits until
// core has AWAIT-KEY; with --hold, stays connected until stdin closes. The last line printed is
// the result, with this client's final document.
import { run, makeClient, waitSynced, waitFor, addEvent, roots, report, canonical } from './lib.mjs'

const emit = (object) => process.stdout.write(canonical(object) + '\n')

run(async ({ url, room, options, track }) => {
  const client = track(makeClient(url, room, options.name || 'js'))
  await waitSynced(client)
  emit({ event: 'synced', clientId: client.doc.clientID })
  if (typeof options.awareness === 'string') {
    client.provider.awareness.setLocalState(JSON.parse(options.awareness))
  }
  if (typeof options.edits === 'string') {
    const tag = options.edits
    const count = Number(options.count || 10)
    for (let i = 0; i < count; i++) {
      addEvent(client.doc, { id: `${tag}-${i}`, by: tag, i })
      roots(client.doc).core.set(`${tag}-${i}`, { by: tag, i })
    }
  }
  if (typeof options['set-key'] === 'string') roots(client.doc).core.set(options['set-key'], true)
  if (typeof options['await-key'] === 'string') {
    const key = options['await-key']
    await waitFor(() => roots(client.doc).core.has(key), `core key ${key}`)
  }
  if (options.hold) {
    emit({ event: 'holding', clientId: client.doc.clientID })
    await new Promise((resolve) => {
      process.stdin.on('end', resolve)
      process.stdin.on('close', resolve)
      process.stdin.resume()
    })
  }
  return { clients: [report(client)] }
})
