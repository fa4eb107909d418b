// The shared socket (WedsyncSocket over /mux, proto/spec.md §10) in Debian's Chromium: a vendor
// dashboard following several weddings over one socket, against a real `gateway serve`, with
// Node clients editing the same weddings over /ws. The SDK is bundled for the page with esbuild
// (an IIFE exposing `Wedsync`), as a dashboard would bundle it.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { build } from 'esbuild'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import * as Y from 'yjs'

import { WedsyncProvider } from '../../src/index.js'
import { ROOT, newWedding, startGateway, stopGateways, waitFor, weddingJson, type RunningGateway } from '../gateway.js'

const CHROMIUM = process.env.WEDSYNC_CHROMIUM ?? '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
const WAIT = { timeout: 20_000 }
const skipBrowser = !existsSync(CHROMIUM) && process.env.WEDSYNC_SKIP_BROWSER === '1' && process.env.CI !== 'true'

let browser: Browser
let gateway: RunningGateway
let bundle: string
const editors: WedsyncProvider[] = []

async function dashboard (weddings: string[]): Promise<Page> {
  const page = await (await browser.newContext()).newPage()
  page.on('pageerror', (error) => { console.error(`page error: ${error.message}`) })
  await page.goto(`${gateway.httpUrl}/livez`) // any page of the gateway's origin
  await page.addScriptTag({ content: bundle })
  await page.evaluate(({ url, weddings }) => {
    const { WedsyncSocket, WedsyncProvider, Y } = (globalThis as any).Wedsync
    const socket = new WedsyncSocket(url)
    const providers = weddings.map((w: string) => new WedsyncProvider('', w, new Y.Doc(), { socket }))
    Object.assign(globalThis, { socket, providers })
  }, { url: gateway.wsUrl.replace(/\/ws$/, '/mux'), weddings })
  return page
}

async function inPage<T> (page: Page, body: string): Promise<T> {
  return await page.evaluate(body) as T
}

describe.skipIf(skipBrowser)('the shared socket in Chromium', () => {
  beforeAll(async () => {
    if (!existsSync(CHROMIUM) && !skipBrowser) {
      throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (WEDSYNC_SKIP_BROWSER=1 skips locally)`)
    }
    const built = await build({
      stdin: {
        contents: "export * from './src/index.ts'\nexport * as Y from 'yjs'\n",
        resolveDir: join(ROOT, 'clients', 'ts'),
        loader: 'ts'
      },
      bundle: true, format: 'iife', globalName: 'Wedsync', target: 'es2022', write: false
    })
    bundle = built.outputFiles[0].text
    gateway = await startGateway()
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  })

  afterAll(async () => {
    for (const p of editors.splice(0)) p.destroy()
    await browser?.close()
    await stopGateways()
  })

  test('a dashboard follows five weddings over one socket: their edits arrive, its own are durable', async () => {
    const weddings = Array.from({ length: 5 }, () => newWedding('dash'))
    for (const [i, wedding] of weddings.entries()) { // each wedding made by a phone on /ws
      const editor = new WedsyncProvider(gateway.wsUrl, wedding, new Y.Doc(), { WebSocketPolyfill: WebSocket })
      editors.push(editor)
      await waitFor(() => editor.synced, `${wedding} synced`)
      editor.doc.transact(() => {
        const core = editor.doc.getMap('core')
        for (const [key, value] of Object.entries({ partner_a: 'Ana', partner_b: `Bea ${i}`, status: 'planning' })) {
          core.set(key, value)
        }
      })
      await waitFor(() => editor.pendingEdits === 0, `${wedding} created`)
    }
    const page = await dashboard(weddings)
    await expect.poll(async () => await inPage(page, 'providers.every((p) => p.synced)'), WAIT).toBe(true)
    expect(await inPage(page, 'providers.map((p) => p.doc.getMap("core").get("partner_b"))'))
      .toEqual(weddings.map((_, i) => `Bea ${i}`))

    editors[3].doc.getMap('core').set('venue', 'Edited on a phone')
    await expect.poll(async () => await inPage(page, 'providers[3].doc.getMap("core").get("venue")'), WAIT)
      .toBe('Edited on a phone')

    await inPage(page, 'providers[1].doc.getMap("core").set("notes", "From the dashboard")')
    await expect.poll(async () => await inPage(page, 'providers[1].pendingEdits'), WAIT).toBe(0)
    expect((await weddingJson(gateway, weddings[1])).core.notes).toBe('From the dashboard')
    await waitFor(() => editors[1].doc.getMap('core').get('notes') === 'From the dashboard', 'the phone has it')
    expect(await inPage(page, 'socket.connections')).toBe(1)
    expect(await inPage(page, 'providers.every((p) => p.acksEnabled)')).toBe(true)
  })
})
