// Random edit sessions with stock Yjs, printed as the updates a gateway room would receive.
//
//   node gen_updates.mjs [--seed N] [--sessions N] [--steps N] [--big BYTES] [--paste BYTES]
//
// Each session has one room (a Y.Doc standing for the gateway) and a few client docs editing
// the wedding schema: Y.Map 'core' (plain values, nested objects and arrays), Y.Array 'timeline'
// of Y.Map entries (nested Y.Map and Y.Text inside some), deletions, large pastes. Clients go
// offline and come back with what they missed merged (Y.mergeUpdates, a diff against the room's
// state vector, or their whole state). Every update the room receives is printed as one JSON
// line {"session": n, "update": hex, "state": {client: clock}, "source": ...}, where state is the
// room's state vector just before it; whole-room snapshots ("fresh": true) are printed with the
// empty state of a new room that receives them.
import * as Y from 'yjs'

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) =>
  arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs, []))
const seed = Number(args.seed ?? 1)
const sessions = Number(args.sessions ?? 20)
const steps = Number(args.steps ?? 80)
const bigBytes = Number(args.big ?? 20000)
const pasteBytes = Number(args.paste ?? 0)

/** mulberry32: a small seeded PRNG, so a failing seed can be replayed. */
function prng (a) {
  return () => {
    a |= 0; a = (a + 0x6D2B79F5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = prng(seed)
const int = (n) => Math.floor(rand() * n)
const pick = (list) => list[int(list.length)]
const chance = (p) => rand() < p

const KEYS = ['partner_a', 'partner_b', 'status', 'wedding_date', 'ceremony_time', 'timezone',
  'venue', 'venue_address', 'guest_count', 'notes']
const ENTRY_KEYS = ['id', 'title', 'start', 'end', 'vendor_id', 'location', 'notes']
const WORDS = ['Ana', 'Bea', 'Quinta', 'jardim', 'café', '😀', 'naïve', '婚礼', '🎉🎉', 'x', '']

function text (maxWords = 6) {
  return Array.from({ length: int(maxWords) + 1 }, () => pick(WORDS)).join(' ')
}

function value (depth = 0) {
  switch (int(depth > 3 ? 6 : 9)) {
    case 0: return text()
    case 1: return int(5000)
    case 2: return rand() * 1000 - 500
    case 3: return chance(0.5)
    case 4: return null
    case 5: return -int(2 ** 31)
    case 6: return Array.from({ length: int(4) }, () => value(depth + 1))
    case 7: return Object.fromEntries(Array.from({ length: int(4) }, (_, i) => [`k${i}`, value(depth + 1)]))
    default: return 2 ** 40 + int(1000)
  }
}

function bigString () {
  const unit = pick(['wedding notes ', 'ç😀 ', 'abc'])
  return unit.repeat(Math.max(1, Math.floor(bigBytes / unit.length / 2) + int(bigBytes / unit.length / 2)))
}

function newEntry (doc) {
  const entry = new Y.Map()
  entry.set('id', `e${doc.clientID % 1000}-${int(1e6)}`)
  entry.set('title', text(3))
  entry.set('start', `${String(int(24)).padStart(2, '0')}:${String(int(60)).padStart(2, '0')}`)
  if (chance(0.3)) {
    const nested = new Y.Map()
    nested.set('inner', value())
    if (chance(0.5)) nested.set('deeper', new Y.Map([['k', value()]]))
    entry.set('details', nested)
  }
  if (chance(0.3)) {
    const notes = new Y.Text()
    notes.insert(0, text())
    entry.set('rich_notes', notes)
  }
  return entry
}

function editEntry (entry) {
  const r = int(5)
  if (r === 0 && entry.get('rich_notes') instanceof Y.Text) {
    const notes = entry.get('rich_notes')
    const at = int(notes.length + 1)
    if (chance(0.7) || notes.length === 0) notes.insert(at, text(), chance(0.3) ? { bold: true } : undefined)
    else if (chance(0.5)) notes.delete(int(notes.length), 1 + int(3))
    else if (chance(0.5)) notes.format(0, Math.min(notes.length, 3), { italic: chance(0.5) ? true : null })
    else notes.insertEmbed(at, { image: 'cake.png', size: [int(100), int(100)] })
  } else if (r === 1 && entry.has('vendor_id')) {
    entry.delete('vendor_id')
  } else if (r === 2 && entry.get('details') instanceof Y.Map) {
    entry.get('details').set(`k${int(5)}`, value())
  } else {
    entry.set(pick(ENTRY_KEYS.slice(1)), chance(0.8) ? text() : value())
  }
}

/** One random edit by ``doc``, sometimes several in one transaction. */
function edit (doc) {
  const core = doc.getMap('core')
  const timeline = doc.getArray('timeline')
  doc.transact(() => {
    for (let n = chance(0.2) ? 2 + int(4) : 1; n > 0; n--) {
      const r = int(100)
      if (r < 35) core.set(pick(KEYS), chance(0.6) ? text() : value())
      else if (r < 40 && core.size > 0) core.delete(pick([...core.keys()]))
      else if (r < 60) timeline.insert(int(timeline.length + 1), [newEntry(doc)])
      else if (r < 75 && timeline.length > 0) editEntry(timeline.get(int(timeline.length)))
      else if (r < 83 && timeline.length > 0) timeline.delete(int(timeline.length), 1)
      else if (r < 86) core.set('notes', bigString())
      else if (r < 90 && timeline.length > 1) {
        const from = int(timeline.length)
        const moved = timeline.get(from).toJSON()
        timeline.delete(from, 1)
        const entry = new Y.Map(Object.entries(moved).filter(([, v]) => typeof v !== 'object'))
        timeline.insert(int(timeline.length + 1), [entry])
      } else if (r < 95) timeline.push(Array.from({ length: 1 + int(5) }, () => newEntry(doc)))
      else core.set(pick(KEYS), { nested: value(), list: [value(), value()] })
    }
  })
}

/** A large paste: into core 'notes', then into a Y.Text of a new timeline entry. */
function paste (doc) {
  const unit = 'Cake arrives at 14:00. Café 😀 '
  const big = unit.repeat(Math.floor(pasteBytes / Buffer.byteLength(unit)))
  doc.getMap('core').set('notes', big)
  const entry = newEntry(doc)
  entry.set('rich_notes', new Y.Text(big))
  doc.getArray('timeline').push([entry])
}

let sessionIndex = 0
const emit = (update, state, source) => process.stdout.write(JSON.stringify({
  session: sessionIndex,
  fresh: state.size === 0 && source.endsWith('snapshots'),
  update: Buffer.from(update).toString('hex'),
  state: Object.fromEntries([...state].map(([client, clock]) => [String(client), clock])),
  source
}) + '\n')

const stateOf = (doc) => Y.decodeStateVector(Y.encodeStateVector(doc))

function session (index) {
  const room = new Y.Doc()
  const clients = Array.from({ length: 2 + int(3) }, () => {
    const doc = new Y.Doc({ gc: chance(0.8) })
    return { doc, online: true, pending: [] }
  })
  const deliver = (update, source) => {
    emit(update, stateOf(room), source)
    Y.applyUpdate(room, update, 'client')
  }
  for (const client of clients) {
    client.doc.on('update', (update, origin) => {
      if (origin === 'sync') return
      if (client.online) {
        deliver(update, 'incremental')
        for (const other of clients) {
          if (other !== client && other.online) Y.applyUpdate(other.doc, update, 'sync')
        }
      } else {
        client.pending.push(update)
      }
    })
  }
  if (pasteBytes > 0) paste(clients[0].doc)
  for (let step = 0; step < steps; step++) {
    const client = pick(clients)
    if (chance(0.08)) {
      client.online = !client.online
      if (client.online) reconnect(client, room, deliver)
      continue
    }
    edit(client.doc)
  }
  for (const client of clients) {
    if (!client.online) {
      client.online = true
      reconnect(client, room, deliver)
    }
  }
  emit(Y.encodeStateAsUpdate(room), new Map(), 'room-snapshots')
  const merged = Y.mergeUpdates(clients.map((c) => Y.encodeStateAsUpdate(c.doc)))
  emit(merged, new Map(), 'merged-snapshots')
  process.stderr.write(`session ${index}: ${clients.length} clients\n`)
}

/** A client back online: sends what it missed (three ways real providers do), then syncs. */
function reconnect (client, room, deliver) {
  const way = int(3)
  if (way === 0 && client.pending.length > 0) deliver(Y.mergeUpdates(client.pending), 'offline-merge')
  else if (way === 1) deliver(Y.encodeStateAsUpdate(client.doc, Y.encodeStateVector(room)), 'sync-step2')
  else deliver(Y.encodeStateAsUpdate(client.doc), 'full-state')
  client.pending = []
  Y.applyUpdate(client.doc, Y.encodeStateAsUpdate(room, Y.encodeStateVector(client.doc)), 'sync')
}

for (; sessionIndex < sessions; sessionIndex++) session(sessionIndex)
