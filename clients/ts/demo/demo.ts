// The demo page the gateway serves at `/` in development mode: one wedding (?wedding=ID, default
// `demo`; ?token=JWT when the gateway checks tokens) edited through @wedsync/client, offline
// included. Bundled by scripts/build-demo.mjs (esbuild).
import * as Y from 'yjs'

import { WedsyncProvider, type RejectEvent } from '../src/index.js'

const CORE_FIELDS = [
  'partner_a', 'partner_b', 'status', 'wedding_date', 'ceremony_time', 'timezone', 'venue',
  'venue_address', 'guest_count', 'notes'
] as const
const REQUIRED = new Set(['partner_a', 'partner_b', 'status'])
const COLORS = ['#b0426e', '#3b6ea8', '#2e7d4f', '#a56400', '#6a4fb3', '#00838f']
const NAMES = ['Ana', 'Bea', 'Caio', 'Dara', 'Eli', 'Flor', 'Gil', 'Hana', 'Ivo', 'Joa']

type Field = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement

const params = new URLSearchParams(location.search)
const weddingId = params.get('wedding') ?? 'demo'
const token = params.get('token') ?? undefined
const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
const provider = new WedsyncProvider(`${scheme}://${location.host}/ws`, weddingId, new Y.Doc(), {
  token,
  offline: true
})

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T
const coreForm = $<HTMLFormElement>('core-form')
const statusEl = $('status')

$('wedding-id').textContent = weddingId
$('role').textContent = `you are ${roleOf(token)}`
document.title = `WedSync · ${weddingId}`

// -- who is here ----------------------------------------------------------------------------------

function myName (): string {
  const named = params.get('name')
  if (named !== null && named !== '') return named
  const sub = token !== undefined ? subjectOf(token) : null
  return sub ?? `Guest ${NAMES[provider.awareness.clientID % NAMES.length]}`
}

function claimsOf (jwt: string): Record<string, any> {
  try {
    return JSON.parse(atob((jwt.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')))
  } catch {
    return {}
  }
}

function subjectOf (jwt: string): string | null {
  const sub = claimsOf(jwt).sub
  return typeof sub === 'string' ? sub : null
}

/** The role the token names for this wedding (the gateway decides; this is only shown). */
function roleOf (jwt: string | undefined): string {
  if (jwt === undefined) return 'planner (development mode)'
  const role = claimsOf(jwt).weddings?.[weddingId]
  return typeof role === 'string' ? role : 'no role here'
}

provider.awareness.setLocalStateField('user', {
  name: myName(), color: COLORS[provider.awareness.clientID % COLORS.length]
})

function renderPresence (): void {
  const list = $('presence')
  list.replaceChildren()
  const states = [...provider.awareness.getStates().entries()]
    .sort(([a], [b]) => (a === provider.awareness.clientID ? -1 : b === provider.awareness.clientID ? 1 : a - b))
  for (const [clientId, state] of states) {
    const user = (state as { user?: { name?: string, color?: string } }).user
    if (user?.name === undefined) continue
    const li = document.createElement('li')
    const me = clientId === provider.awareness.clientID
    li.textContent = me ? `${user.name} (you)` : user.name
    li.className = me ? 'me' : ''
    li.style.background = user.color ?? COLORS[0]
    list.append(li)
  }
}

provider.awareness.on('change', renderPresence)

// -- status ---------------------------------------------------------------------------------------

function renderStatus (): void {
  let text: string
  let kind: string
  const pending = provider.pendingEdits
  if (provider.status !== 'connected' || !provider.synced) {
    const kept = pending > 0 ? ` · ${pending} edit${pending === 1 ? '' : 's'} kept on this device` : ''
    if (provider.status === 'connecting' && navigator.onLine) {
      text = 'Connecting…'
      kind = 'connecting'
    } else {
      text = `Offline${kept}`
      kind = 'offline'
    }
  } else if (pending > 0 || provider.acksPaused) {
    text = 'Saving…'
    kind = 'saving'
  } else {
    text = 'Saved ✓'
    kind = 'saved'
  }
  statusEl.textContent = text
  statusEl.className = `status ${kind}`
}

provider.on('status', renderStatus)
provider.on('saved', renderStatus)
provider.on('synced', renderStatus)

// -- refusals -------------------------------------------------------------------------------------

const LABELS: Record<string, string> = {
  partner_a: 'Partner A', partner_b: 'Partner B', status: 'Status', wedding_date: 'Date',
  ceremony_time: 'Ceremony', timezone: 'Time zone', venue: 'Venue', venue_address: 'Venue address',
  guest_count: 'Guests', notes: 'Notes'
}

function describeField (field: string): string {
  const core = /^core\.(.+)$/.exec(field)
  if (core !== null) return LABELS[core[1]] ?? core[1]
  if (field.startsWith('timeline')) return 'the timeline'
  return field
}

provider.on('reject', ({ field, reason }: RejectEvent) => {
  $('refusal-text').textContent = `Your change to ${describeField(field)} was refused: ${reason}`
  $('refusal').hidden = false
})
$('refusal-close').addEventListener('click', () => { $('refusal').hidden = true })

// -- the document ---------------------------------------------------------------------------------

let doc = provider.doc

function core (): Y.Map<unknown> {
  return doc.getMap('core')
}

function timeline (): Y.Array<Y.Map<unknown>> {
  return doc.getArray('timeline')
}

function fieldOf (name: string): Field {
  return coreForm.elements.namedItem(name) as Field
}

function renderCore (): void {
  const map = core()
  const created = map.has('partner_a')
  $('create').hidden = created
  $('core').hidden = !created
  $('timeline').hidden = !created
  for (const name of CORE_FIELDS) {
    const el = fieldOf(name)
    if (el.dataset.dirty === 'true') continue // the user is typing here: keep their text
    const value = map.get(name)
    const text = value === undefined || value === null ? '' : String(value)
    if (el.value !== text) el.value = text
  }
}

function renderTimeline (): void {
  const list = $('timeline-list')
  list.replaceChildren()
  timeline().forEach((entry, index) => {
    const li = document.createElement('li')
    const time = document.createElement('span')
    time.className = 'time'
    const end = entry.get('end')
    time.textContent = `${String(entry.get('start') ?? '')}${end !== undefined ? `–${String(end)}` : ''}`
    const what = document.createElement('span')
    what.className = 'what'
    what.textContent = String(entry.get('title') ?? '')
    li.append(time, what)
    const vendor = entry.get('vendor_id')
    if (vendor !== undefined) {
      const tag = document.createElement('span')
      tag.className = 'vendor'
      tag.textContent = String(vendor)
      li.append(tag)
    }
    const remove = document.createElement('button')
    remove.type = 'button'
    remove.className = 'link'
    remove.textContent = 'Remove'
    remove.setAttribute('aria-label', `Remove ${String(entry.get('title') ?? '')}`)
    remove.addEventListener('click', () => { timeline().delete(index, 1) })
    li.append(remove)
    li.dataset.id = String(entry.get('id') ?? '')
    list.append(li)
  })
  $('timeline-empty').hidden = timeline().length > 0
}

function render (): void {
  renderCore()
  renderTimeline()
}

function bind (next: Y.Doc): void {
  doc = next
  doc.on('afterTransaction', render)
  render()
}

provider.on('reset', ({ doc: next }) => {
  doc.off('afterTransaction', render)
  bind(next)
})
bind(provider.doc)

// -- editing --------------------------------------------------------------------------------------

for (const name of CORE_FIELDS) {
  const el = fieldOf(name)
  el.addEventListener('input', () => { el.dataset.dirty = 'true' })
  el.addEventListener('change', () => {
    el.dataset.dirty = 'false'
    const raw = el.value.trim()
    const map = core()
    if (raw === '') {
      if (REQUIRED.has(name)) renderCore() // required fields are never deleted
      else if (map.has(name)) map.delete(name)
      return
    }
    const value = name === 'guest_count' ? Number(raw) : raw
    if (map.get(name) !== value) map.set(name, value)
  })
}

$<HTMLFormElement>('create-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.target as HTMLFormElement
  const data = new FormData(form)
  doc.transact(() => {
    core().set('partner_a', String(data.get('partner_a')).trim())
    core().set('partner_b', String(data.get('partner_b')).trim())
    core().set('status', 'planning')
  })
  form.reset()
})

$<HTMLFormElement>('timeline-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.target as HTMLFormElement
  const data = new FormData(form)
  const entry = new Y.Map<unknown>()
  entry.set('id', `e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`)
  entry.set('title', String(data.get('title')).trim())
  entry.set('start', String(data.get('start')))
  for (const key of ['end', 'vendor_id']) {
    const value = String(data.get(key) ?? '').trim()
    if (value !== '') entry.set(key, value)
  }
  timeline().push([entry])
  form.reset()
})

renderStatus()
renderPresence()

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js').catch((error: unknown) => {
    console.warn('the demo works online only: no service worker', error)
  })
}

// For the browser tests and for poking around in the console.
Object.assign(globalThis, { wedsync: { provider, get doc () { return doc } } })
