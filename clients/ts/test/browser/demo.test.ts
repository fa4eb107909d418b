// The demo page in Debian's Chromium, driven by playwright-core, against a real `gateway serve`
// that checks tokens: two browsers converge; one goes offline, edits, reloads while offline,
// still shows its edits and sends them when back; a vendor's forbidden edit shows the refusal
// and the old value. Screenshots of the page are kept in test-results/.
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import { JWT_SECRET, ROOT, genToken, newWedding, startGateway, stopGateways, type RunningGateway } from '../gateway.js'

const CHROMIUM = process.env.WEDSYNC_CHROMIUM ?? '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
const ARTIFACTS = join(ROOT, 'clients', 'ts', 'test-results')
const WAIT = { timeout: 20_000 }

let browser: Browser
let gateway: RunningGateway
const contexts: BrowserContext[] = []

function requireChromium (): void {
  if (existsSync(CHROMIUM)) return
  // A laptop may opt out explicitly; CI never skips (`make test` must fail without a browser).
  if (process.env.WEDSYNC_SKIP_BROWSER === '1' && process.env.CI !== 'true') return
  throw new Error(`no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium)` +
    ' or point WEDSYNC_CHROMIUM at one; set WEDSYNC_SKIP_BROWSER=1 to skip locally (never in CI)')
}

const skipBrowser = !existsSync(CHROMIUM) && process.env.WEDSYNC_SKIP_BROWSER === '1' && process.env.CI !== 'true'

async function openDemo (wedding: string, token: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 820 } })
  contexts.push(context)
  const page = await context.newPage()
  page.on('pageerror', (error) => { console.error(`page error: ${error.message}`) })
  await page.goto(`${gateway.httpUrl}/?wedding=${wedding}&token=${token}`)
  await expect.poll(async () => await status(page), WAIT).toBe('Saved ✓')
  return page
}

async function status (page: Page): Promise<string> {
  return (await page.locator('#status').textContent()) ?? ''
}

async function createWedding (page: Page, a: string, b: string): Promise<void> {
  const form = page.locator('#create-form')
  await form.getByLabel('Partner A').fill(a)
  await form.getByLabel('Partner B').fill(b)
  await form.getByRole('button', { name: 'Create wedding' }).click()
  await page.locator('#core').waitFor({ state: 'visible' })
}

async function setField (page: Page, label: string, value: string): Promise<void> {
  const input = page.locator('#core-form').getByLabel(label, { exact: true })
  await input.fill(value)
  await input.press('Tab') // commits: the 'change' event
}

const fieldValue = async (page: Page, label: string): Promise<string> =>
  await page.locator('#core-form').getByLabel(label, { exact: true }).inputValue()

async function addEntry (page: Page, start: string, title: string): Promise<void> {
  const form = page.locator('#timeline-form')
  await form.getByLabel('Start').fill(start)
  await form.getByLabel('Title').fill(title)
  await form.getByRole('button', { name: 'Add' }).click()
}

const titles = async (page: Page): Promise<string[]> => await page.locator('#timeline-list .what').allTextContents()

/** Edits the page's provider took over from closed tabs, once its offline copy is open. */
async function adoptedEdits (page: Page): Promise<number> {
  return await page.evaluate(async () => {
    const { provider } = (globalThis as any).wedsync
    await provider.whenLoaded
    return provider.localVersion as number // only adoption counts edits before any are made
  })
}

async function screenshot (page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

describe.skipIf(skipBrowser)('the demo page in Chromium', () => {
  beforeAll(async () => {
    requireChromium()
    gateway = await startGateway({ GATEWAY_JWT_SECRET: JWT_SECRET })
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  })

  afterAll(async () => {
    for (const context of contexts.splice(0)) await context.close()
    await browser?.close()
    await stopGateways()
  })

  test('two browsers converge; an offline reload keeps its edits and sends them when back', async () => {
    const wedding = newWedding('demo')
    const planner = async (who: string): Promise<string> =>
      await genToken('--subject', who, '--wedding', wedding, '--role', 'planner')
    const a = await openDemo(wedding, await planner('ana'))
    const b = await openDemo(wedding, await planner('bea'))

    await createWedding(a, 'Ana Silva', 'Bea Costa')
    await expect.poll(async () => await fieldValue(b, 'Partner A'), WAIT).toBe('Ana Silva')
    await setField(b, 'Venue', 'Quinta do Lago')
    await expect.poll(async () => await fieldValue(a, 'Venue'), WAIT).toBe('Quinta do Lago')
    await expect.poll(async () => await a.locator('#presence li').allTextContents(), WAIT)
      .toEqual(['ana (you)', 'bea'])
    await expect.poll(async () => await status(a), WAIT).toBe('Saved ✓')
    await screenshot(a, 'demo-online')

    // The service worker holds the page, so that it opens again without a network.
    await a.waitForFunction(() => navigator.serviceWorker.controller !== null, null, WAIT)
    await a.context().setOffline(true)
    await expect.poll(async () => await status(a), WAIT).toMatch(/^Offline/)
    await setField(a, 'Venue', 'Offline venue')
    await addEntry(a, '16:30', 'Ceremony in the garden')
    // Reported pending only once they are in IndexedDB:
    await expect.poll(async () => await status(a), WAIT).toBe('Offline · 2 edits kept on this device')

    await a.reload()
    await expect.poll(async () => await fieldValue(a, 'Venue'), WAIT).toBe('Offline venue')
    expect(await titles(a)).toEqual(['Ceremony in the garden'])
    await expect.poll(async () => await status(a), WAIT).toBe('Offline · 2 edits kept on this device')
    await screenshot(a, 'demo-offline-reloaded')
    expect(await fieldValue(b, 'Venue')).toBe('Quinta do Lago')
    expect(await titles(b)).toEqual([])

    await a.context().setOffline(false)
    await expect.poll(async () => await status(a), WAIT).toBe('Saved ✓')
    await expect.poll(async () => await fieldValue(b, 'Venue'), WAIT).toBe('Offline venue')
    await expect.poll(async () => await titles(b), WAIT).toEqual(['Ceremony in the garden'])
    await screenshot(b, 'demo-other-browser')
  })

  test('a second tab offline does not take the open tab\'s edits; once that tab is closed, a reload does', async () => {
    const wedding = newWedding('demo')
    const token = await genToken('--subject', 'ana', '--wedding', wedding, '--role', 'planner')
    const other = await openDemo(wedding, await genToken('--subject', 'bea', '--wedding', wedding, '--role', 'planner'))
    const first = await openDemo(wedding, token)
    await createWedding(first, 'Ana Silva', 'Bea Costa')
    await expect.poll(async () => await status(first), WAIT).toBe('Saved ✓')
    await first.waitForFunction(() => navigator.serviceWorker.controller !== null, null, WAIT)
    const context = first.context()
    await context.setOffline(true)
    await addEntry(first, '12:00', 'Lunch')
    await expect.poll(async () => await status(first), WAIT).toBe('Offline · 1 edit kept on this device')

    const second = await context.newPage() // same browser profile: same IndexedDB
    await second.goto(`${gateway.httpUrl}/?wedding=${wedding}&token=${token}`)
    await expect.poll(async () => await titles(second), WAIT).toEqual(['Lunch']) // the stored document
    expect(await adoptedEdits(second)).toBe(0) // the first tab's edit is the first tab's to send
    expect(await status(second)).toBe('Offline')
    await first.close()
    await second.reload()
    expect(await adoptedEdits(second)).toBe(1)
    await expect.poll(async () => await status(second), WAIT).toBe('Offline · 1 edit kept on this device')
    await context.setOffline(false)
    await expect.poll(async () => await status(second), WAIT).toBe('Saved ✓')
    await expect.poll(async () => await titles(other), WAIT).toEqual(['Lunch'])
  })

  test("a vendor's forbidden edit shows the refusal and the old value", async () => {
    const wedding = newWedding('demo')
    const planner = await openDemo(wedding, await genToken('--subject', 'pat', '--wedding', wedding, '--role', 'planner'))
    await createWedding(planner, 'Ana Silva', 'Bea Costa')
    await setField(planner, 'Venue', 'Orangery')
    await expect.poll(async () => await status(planner), WAIT).toBe('Saved ✓')

    const vendor = await openDemo(wedding, await genToken(
      '--subject', 'flo', '--wedding', wedding, '--role', 'vendor', '--vendor-id', 'florist'))
    await expect.poll(async () => await fieldValue(vendor, 'Venue'), WAIT).toBe('Orangery')
    await setField(vendor, 'Venue', 'Somewhere else')
    const refusal = vendor.locator('#refusal')
    await refusal.waitFor({ state: 'visible', ...WAIT })
    expect(await refusal.textContent()).toMatch(/Your change to Venue was refused: \S/)
    await expect.poll(async () => await fieldValue(vendor, 'Venue'), WAIT).toBe('Orangery')
    await expect.poll(async () => await status(vendor), WAIT).toBe('Saved ✓')
    expect(await fieldValue(planner, 'Venue')).toBe('Orangery')
    await screenshot(vendor, 'demo-refused')
  })
})
