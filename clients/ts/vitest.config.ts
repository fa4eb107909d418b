import { defineConfig } from 'vitest/config'

// Three projects: `unit` (pure: proto/vectors, backoff, close codes), `node` (the SDK in Node
// against real `gateway serve` processes) and `browser` (Debian's Chromium on the demo page,
// driven by playwright-core). The two last start gateways of their own: one file at a time.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'node',
          include: ['test/node/**/*.test.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          fileParallelism: false
        }
      },
      {
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 90_000,
          fileParallelism: false
        }
      }
    ]
  }
})
