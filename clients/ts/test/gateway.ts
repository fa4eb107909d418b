// Real `gateway serve` processes for the Node and browser tests, and helpers to wait on
// conditions (never on time). The gateway is the repository's own (.venv/bin/gateway, built by
// `make install`); WEDSYNC_GATEWAY overrides the executable.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll } from 'vitest'

import type { WedsyncProvider } from '../src/index.js'

const run = promisify(execFile)

export const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)))
export const GATEWAY = process.env.WEDSYNC_GATEWAY ?? join(ROOT, '.venv', 'bin', 'gateway')
export const PYTHON = join(ROOT, '.venv', 'bin', 'python')
/** Longest any single wait may take: protection against hangs, not a performance bound. */
export const WAIT_MS = Number(process.env.WEDSYNC_TEST_WAIT_MS ?? 15_000)
export const JWT_SECRET = 'ts-sdk-tests-secret-0123456789abcdef0123456789'

export interface RunningGateway {
  port: number
  dataDir: string
  wsUrl: string
  httpUrl: string
  process: ChildProcess
  exited: Promise<number | null>
  output: () => string
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

const started: RunningGateway[] = []

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export function requireGateway (): void {
  if (!existsSync(GATEWAY)) {
    throw new Error(`${GATEWAY} is missing: run \`make install\` at ${ROOT} first`)
  }
}

/** Start `gateway serve` on a free port with `env` (GATEWAY_* variables) and wait until live. */
export async function startGateway (
  env: Record<string, string> = {}, { port, dataDir }: { port?: number, dataDir?: string } = {}
): Promise<RunningGateway> {
  requireGateway()
  port ??= await freePort()
  const keepData = dataDir !== undefined
  dataDir ??= mkdtempSync(join(tmpdir(), 'wedsync-ts-'))
  const child = spawn(GATEWAY, ['serve'], {
    cwd: ROOT,
    env: {
      ...process.env,
      GATEWAY_PORT: String(port),
      GATEWAY_DATA_DIR: dataDir,
      GATEWAY_LOG_LEVEL: 'warning',
      GATEWAY_ROOM_IDLE_SECONDS: '0.5',
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (chunk) => { output += String(chunk) })
  child.stderr?.on('data', (chunk) => { output += String(chunk) })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  let exitCode: number | null | undefined
  void exited.then((code) => {
    exitCode = code
    if (!keepData) rmSync(dataDir, { recursive: true, force: true })
  })
  const gateway: RunningGateway = {
    port,
    dataDir,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    process: child,
    exited,
    output: () => output,
    stop: async (signal = 'SIGTERM') => {
      if (exitCode === undefined) child.kill(signal)
      return await exited
    }
  }
  started.push(gateway)
  await waitFor(async () => {
    if (exitCode !== undefined) throw new Error(`gateway exited with ${exitCode}:\n${output}`)
    try {
      return (await fetch(`${gateway.httpUrl}/livez`)).ok
    } catch {
      return false
    }
  }, `the gateway on port ${port} answers /livez`, 30_000)
  return gateway
}

/** Stop every gateway started by this test file (call from afterAll/afterEach). */
export async function stopGateways (): Promise<void> {
  await Promise.all(started.splice(0).map(async (g) => await g.stop('SIGKILL')))
}

/** `gateway gen-token`, signed with JWT_SECRET (tokens on: GATEWAY_JWT_SECRET = JWT_SECRET). */
export async function genToken (...args: string[]): Promise<string> {
  const { stdout } = await run(GATEWAY, ['gen-token', ...args], {
    env: { ...process.env, GATEWAY_JWT_SECRET: JWT_SECRET }
  })
  return stdout.trim()
}

/** Resolve with `check()`'s value once it is truthy; poll with a deadline. */
export async function waitFor<T> (
  check: () => T | Promise<T>, what: string, timeoutMs = WAIT_MS
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let delay = 2
  while (true) {
    const value = await check()
    if (value !== null && value !== undefined && value !== false) return value as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, delay)) // polls a condition
    delay = Math.min(delay * 2, 25)
  }
}

/** A Postgres schema of the test's own (migrated), and Redis prefix, dropped by `drop()`. */
export async function sharedStore (): Promise<{ env: Record<string, string>, drop: () => Promise<void> }> {
  requireGateway()
  const name = `ts_${Math.random().toString(16).slice(2, 14)}`
  const candidates = process.env.GATEWAY_TEST_DATABASE_URL !== undefined
    ? [process.env.GATEWAY_TEST_DATABASE_URL]
    : [`postgresql://${userInfo().username}@127.0.0.1:5432/test`, 'postgresql://postgres@127.0.0.1:5432/test']
  const redis = process.env.GATEWAY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0'
  let lastError: unknown
  for (const dsn of candidates) {
    const env = { GATEWAY_DATABASE_URL: dsn, GATEWAY_DATABASE_SCHEMA: name, GATEWAY_REDIS_URL: redis, GATEWAY_REDIS_PREFIX: name }
    try {
      await run(GATEWAY, ['migrate'], { env: { ...process.env, ...env } })
    } catch (error) {
      lastError = error
      continue
    }
    const drop = async (): Promise<void> => {
      const script = 'import asyncio, sys, asyncpg\n' +
        'async def main():\n' +
        '    conn = await asyncpg.connect(sys.argv[1])\n' +
        '    await conn.execute(f\'DROP SCHEMA IF EXISTS "{sys.argv[2]}" CASCADE\')\n' +
        '    await conn.close()\n' +
        'asyncio.run(main())\n'
      await run(PYTHON, ['-c', script, dsn, name])
    }
    return { env, drop }
  }
  throw new Error(`Postgres at ${candidates.join(' or ')} is unreachable (start it, or set GATEWAY_TEST_DATABASE_URL): ${String(lastError)}`)
}

/** The wedding as the gateway's HTTP API shows it (GET /v1/weddings/{id}). */
export async function weddingJson (gateway: RunningGateway, wedding: string, token?: string): Promise<any> {
  const headers: Record<string, string> = token !== undefined ? { Authorization: `Bearer ${token}` } : {}
  const response = await fetch(`${gateway.httpUrl}/v1/weddings/${wedding}`, { headers })
  if (!response.ok) throw new Error(`GET /v1/weddings/${wedding}: ${response.status} ${await response.text()}`)
  return await response.json()
}

export function newWedding (prefix = 'ts'): string {
  return `${prefix}-${Math.random().toString(16).slice(2, 14)}`
}

/** A wedding's first edit: the required core fields (proto/schema.md), and `fields`. */
export function createWedding (provider: WedsyncProvider, fields: Record<string, string | number> = {}): void {
  provider.doc.transact(() => {
    const core = provider.doc.getMap('core')
    for (const [key, value] of Object.entries({ partner_a: 'Ana', partner_b: 'Bea', status: 'planning', ...fields })) {
      core.set(key, value)
    }
  })
}

/** Two gateways (`one`, `two`) on one Postgres schema and Redis prefix of their own, started
 * before the enclosing describe block's tests and stopped (SIGKILL, a stopped one too) after. */
export function twoGatewaysOnOneStore (): { one: RunningGateway, two: RunningGateway } {
  const gateways: { one: RunningGateway, two: RunningGateway } = {} as any
  let drop: () => Promise<void> = async () => {}
  beforeAll(async () => {
    const store = await sharedStore()
    drop = store.drop
    gateways.one = await startGateway({ ...store.env, GATEWAY_NODE_ID: 'one' })
    gateways.two = await startGateway({ ...store.env, GATEWAY_NODE_ID: 'two' })
  })
  afterAll(async () => {
    await stopGateways()
    await drop()
  })
  return gateways
}
