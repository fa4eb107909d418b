// The demo's service worker: the page and its bundle from the network when it answers, else
// from the cache, so a page reloaded offline still opens (its edits come from IndexedDB).
const CACHE = 'wedsync-demo-v1'
const PAGE = '/'
const ASSETS = [PAGE, '/demo/demo.js', '/demo/demo.css']

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(ASSETS)))
  self.skipWaiting()
})

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim())
})

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url)
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return
  const key = url.pathname === '/' ? PAGE : ASSETS.includes(url.pathname) ? url.pathname : null
  if (key === null) return
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone()
          event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)))
        }
        return response
      })
      .catch(async () => (await caches.match(key)) ?? Response.error())
  )
})
