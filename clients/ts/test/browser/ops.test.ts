// The ops page (/ops, gateway/ops.py) in Debian's Chromium, driven by playwright-core, against two
// real `gateway serve` nodes sharing Postgres and Redis that check tokens: the page asks for an
// admin token, then shows both nodes, connections by platform, the wedding of today, and numbers
// that move while SDK clients on both nodes keep editing. A screenshot is kept in test-results/
// (and copied to docs/ops-screenshot.png when WEDSYNC_OPS_SCREENSHOT=1).
import { copyFileSync, existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'

import { WedsyncProvider, type Platform } from '../../src/index.js'
import {
  JWT_SECRET, ROOT, genToken, newWedding, sharedStore, startGateway, stopGateways, waitFor,
  type RunningGateway
} from '../gateway.js'

const CHROMIUM = process.env.WEDSYNC_CHROMIUM ?? '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
const ARTIFACTS = join(ROOT, 'clients', 'ts', 'test-results')
const WAIT = { timeout: 20_000 }
const skipBrowser = !existsSync(CHROMIUM) && process.env.WEDSYNC_SKIP_BROWSER === '1' && process.env.CI !== 'true'

let browser: Browser
let nodes: RunningGateway[] = []
let drop: (() => Promise<void>) | undefined
const providers: WedsyncProvider[] = []
const timers: Array<ReturnType<typeof setInterval>> = []

function requireChromium (): void {
  if (existsSync(CHROMIUM) || skipBrowser) return
  throw new Error(`no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium)` +
    ' or point WEDSYNC_CHROMIUM at one; set WEDSYNC_SKIP_BROWSER=1 to skip locally (never in CI)')
}

function todayUtc (): string {
  return new Date().toISOString().slice(0, 10)
}

async function client (
  node: RunningGateway, wedding: string, platform: Platform, role: string[] = ['--role', 'planner']
): Promise<WedsyncProvider> {
  const token = await genToken('--subject', `${platform}-user`, '--wedding', wedding, ...role)
  const provider = new WedsyncProvider(node.wsUrl, wedding, new Y.Doc(), {
    WebSocketPolyfill: WebSocket, token, platform
  })
  providers.push(provider)
  await waitFor(() => provider.synced, `${platform} client on port ${node.port} synced`)
  return provider
}

/** Edit the wedding's notes every `ms`: the small load the page must show moving. */
function keepEditing (provider: WedsyncProvider, ms: number): void {
  let n = 0
  timers.push(setInterval(() => { provider.doc.getMap('core').set('notes', `edit ${n++}`) }, ms))
}

const number = async (page: Page, id: string): Promise<number> =>
  Number(((await page.locator(`#${id}`).textContent()) ?? '').replace(/[^0-9.]/g, '') || NaN)

describe.skipIf(skipBrowser)('the ops page in Chromium', () => {
  beforeAll(async () => {
    requireChromium()
    const store = await sharedStore()
    drop = store.drop
    const env = { ...store.env, GATEWAY_JWT_SECRET: JWT_SECRET, GATEWAY_LEASE_SECONDS: '1.5' }
    nodes = [
      await startGateway({ ...env, GATEWAY_NODE_ID: 'node-a' }),
      await startGateway({ ...env, GATEWAY_NODE_ID: 'node-b' })
    ]
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  })

  afterAll(async () => {
    for (const timer of timers.splice(0)) clearInterval(timer)
    for (const provider of providers.splice(0)) provider.destroy()
    await browser?.close()
    await stopGateways()
    await drop?.()
  })

  test('after the admin token, it shows both nodes, platforms, today\'s wedding, and moving numbers', async () => {
    const [a, b] = nodes
    const today = newWedding('today')
    const later = newWedding('later')
    // On node A: the couple's phone and the planner's browser; on node B (it relays to the
    // wedding's judge, node A, whose clients came first): a vendor's integration, whose writes
    // of core fields node A refuses (role vendor), and a PWA.
    const ios = await client(a, today, 'ios')
    ios.doc.transact(() => {
      const core = ios.doc.getMap('core')
      for (const [key, value] of Object.entries({
        partner_a: 'Ana Silva', partner_b: 'Bea Costa', status: 'confirmed', wedding_date: todayUtc(),
        timezone: 'UTC', ceremony_time: '16:30', venue: 'Quinta do Lago'
      })) core.set(key, value)
    })
    const web = await client(a, later, 'web')
    web.doc.transact(() => {
      const core = web.doc.getMap('core')
      core.set('partner_a', 'Cleo'); core.set('partner_b', 'Dan'); core.set('status', 'planning')
      core.set('wedding_date', '2099-06-12')
    })
    const integration = await client(b, today, 'integration', ['--role', 'vendor', '--vendor-id', 'florist'])
    const pwa = await client(b, later, 'pwa')
    for (const provider of [ios, web, integration, pwa]) keepEditing(provider, 100)

    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } })
    const page = await context.newPage()
    page.on('pageerror', (error) => { console.error(`page error: ${error.message}`) })
    await page.goto(`${a.httpUrl}/ops?interval=500`)

    // Tokens are checked: the page asks for an admin token (a planner's is refused: 403).
    await page.locator('#login').waitFor({ state: 'visible', ...WAIT })
    await expect.poll(async () => await page.locator('#banner').textContent(), WAIT).toMatch(/^401/)
    await page.locator('#token').fill(await genToken('--subject', 'bob', '--wedding', today, '--role', 'planner'))
    await page.getByRole('button', { name: 'Show' }).click()
    await expect.poll(async () => await page.locator('#banner').textContent(), WAIT).toMatch(/^403/)
    await page.locator('#token').fill(await genToken('--subject', 'ops', '--admin'))
    await page.getByRole('button', { name: 'Show' }).click()
    await page.locator('#login').waitFor({ state: 'hidden', ...WAIT })

    await expect.poll(async () => await page.locator('#node-id').textContent(), WAIT).toBe('node-a')
    // Both nodes: this one ready, node B heard from (it relays its clients' edits to node A).
    await expect.poll(async () => await page.locator('#nodes tr td:first-child').allTextContents(), WAIT)
      .toEqual(['node-a', 'node-b'])
    await expect.poll(async () => await page.locator('#nodes .pill').allTextContents(), WAIT).toEqual(['ready', 'up'])
    await expect.poll(async () => await number(page, 'connections-total'), WAIT).toBe(2)
    const platform = async (name: string): Promise<string | null> =>
      await page.locator(`#platforms [data-platform="${name}"] .v`).textContent()
    expect(await platform('ios')).toBe('1')
    expect(await platform('web')).toBe('1')
    expect(await platform('pwa')).toBe('0') // a client of node B
    await expect.poll(async () => await number(page, 'rooms-loaded'), WAIT).toBe(2)
    await expect.poll(async () => await page.locator('#weddings tr td:first-child').allTextContents(), WAIT)
      .toEqual([today])
    expect(await page.locator('#weddings tr').textContent()).toContain('Ana Silva & Bea Costa')

    // Under the edits the numbers move: acks counted between polls, messages per second, and
    // node A judges node B's relayed edits too (its sync count covers only its own clients).
    await expect.poll(async () => await number(page, 'ack-count'), WAIT).toBeGreaterThan(0)
    await expect.poll(async () => await number(page, 'messages-rate'), WAIT).toBeGreaterThan(0)
    await expect.poll(async () => await page.locator('#sync-p99').textContent(), WAIT).toMatch(/[µm]?s$/)
    await expect.poll(async () => await number(page, 'refusals-total'), WAIT).toBeGreaterThan(0)
    expect(await page.locator('#refusal-classes').textContent()).toMatch(/^core\/permission: /)
    const before = await page.evaluate(() => (globalThis as any).document.getElementById('updated').textContent)
    const seen = new Set<string>()
    await expect.poll(async () => {
      seen.add((await page.locator('#ack-count').textContent()) ?? '')
      return seen.size
    }, WAIT).toBeGreaterThan(2) // the counts change from poll to poll
    expect(await page.evaluate(() => (globalThis as any).document.getElementById('updated').textContent)).not.toBe(before)

    mkdirSync(ARTIFACTS, { recursive: true })
    const shot = join(ARTIFACTS, 'ops-page.png')
    await page.screenshot({ path: shot, fullPage: true })
    if (process.env.WEDSYNC_OPS_SCREENSHOT === '1') copyFileSync(shot, join(ROOT, 'docs', 'ops-screenshot.png'))
    // And on a phone: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 })
    const overflow = await page.evaluate(() => {
      const doc = (globalThis as any).document.documentElement
      return doc.scrollWidth - doc.clientWidth
    })
    expect(overflow).toBeLessThanOrEqual(0)
    await page.screenshot({ path: join(ARTIFACTS, 'ops-page-phone.png'), fullPage: true })
    await context.close()
  })
})
