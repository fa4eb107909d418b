/** What a client declares it runs on, as `?platform=` on its URL (proto/spec.md §1): for the
 * operators' metrics only (`gateway_connections_by_platform`). */
export type Platform = 'web' | 'pwa' | 'ios' | 'android' | 'integration'

/** `pwa` when the page runs as an installed app (display-mode standalone), else `web`. */
export function defaultPlatform (): Platform {
  const matchMedia = (globalThis as { matchMedia?: (query: string) => { matches: boolean } }).matchMedia
  return typeof matchMedia === 'function' && matchMedia('(display-mode: standalone)').matches ? 'pwa' : 'web'
}

/** `url` with the platform declared. */
export function withPlatform (url: string, platform: Platform): string {
  return `${url}${url.includes('?') ? '&' : '?'}platform=${encodeURIComponent(platform)}`
}
