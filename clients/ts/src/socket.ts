/**
 * What a client does after each close code (proto/spec.md §6), and reconnect delays as a pure
 * generator, so tests never sleep (the same rule as clients/python/gateway_client/backoff.py).
 */

export const CloseCode = {
  NORMAL: 1000,
  ABNORMAL: 1006,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SHUTTING_DOWN: 1012,
  SLOW_CLIENT: 4001,
  BACKEND_UNAVAILABLE: 4002,
  ROOM_RESET: 4003,
  MISSING_REFERENCE: 4004,
  UNAUTHORIZED: 4401,
  HANDSHAKE_TIMEOUT: 4408,
  CLIENT_ID_IN_USE: 4409,
  RATE_LIMITED: 4429,
  PROTOCOL_ERROR: 4500,
  FORBIDDEN: 4503
} as const

/**
 * Whether to reconnect (with backoff) after the server closed with `code`: not after 1009 nor
 * 4500–4999 (the same connection would fail again). 4401 reconnects only with a new token
 * (`needsNewToken`). A connection lost without a close frame (1006) reconnects.
 */
export function reconnects (code: number): boolean {
  return !(code >= 4500 && code < 5000) && code !== CloseCode.MESSAGE_TOO_BIG
}

/** 4401: the token is missing, invalid, expired or revoked; the same one fails again. */
export function needsNewToken (code: number): boolean {
  return code === CloseCode.UNAUTHORIZED
}

export interface BackoffOptions {
  /** Upper bound of the random first delay, in ms (spec §6: 1 s). */
  initialMs?: number
  factor?: number
  maxMs?: number
  random?: () => number
}

/** Reconnect delays in ms: a random first one below `initialMs`, then ×1.618 up to 90 s. */
export function * backoff ({
  initialMs = 1000, factor = 1.618, maxMs = 90_000, random = Math.random
}: BackoffOptions = {}): Generator<number, never, void> {
  let delay = random() * initialMs
  yield delay
  delay = Math.max(delay, initialMs / 10)
  while (true) {
    delay = Math.min(delay * factor, maxMs)
    yield delay
  }
}

/** The subset of the WebSocket API the provider uses (the browser's, or the `ws` package's). */
export interface WebSocketLike {
  binaryType: string
  readonly readyState: number
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number, reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
  send: (data: Uint8Array) => void
  close: (code?: number, reason?: string) => void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

/** Decompress a gzip member with the platform's DecompressionStream (browsers, Node 18+). */
export async function gunzip (data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream('gzip'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

/** Seconds since the epoch at which a JWT expires (its `exp`), or null when it says none. */
export function tokenExpiry (token: string): number | null {
  const payload = token.split('.')[1]
  if (payload === undefined) return null
  try {
    const text = atob(payload.replace(/-/g, '+').replace(/_/g, '/'))
    const exp: unknown = JSON.parse(text).exp
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : null
  } catch {
    return null
  }
}
