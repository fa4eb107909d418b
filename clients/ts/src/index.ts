/** @wedsync/client: the WedSync Gateway SDK for browsers, PWAs and Node. */

export {
  WedsyncProvider,
  type CloseEvent,
  type ConnectionStatus,
  type RejectEvent,
  type SavedEvent,
  type TokenSource,
  type WedsyncProviderEvents,
  type WedsyncProviderOptions
} from './provider.js'
export * as protocol from './protocol.js'
export { WedsyncSocket, MuxChannel, type WedsyncSocketOptions } from './mux.js'
export {
  CloseCode, backoff, needsNewToken, reconnects,
  type BackoffOptions, type WebSocketConstructor, type WebSocketLike
} from './socket.js'
export { defaultPlatform, type Platform } from './platform.js'
