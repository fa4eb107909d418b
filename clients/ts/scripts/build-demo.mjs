// Build the demo page (dist/demo/) from the SDK's sources with esbuild, and report the SDK's
// bundle size (minified, then gzip): `node scripts/build-demo.mjs [--sizes]`.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..')
const OUT = join(HERE, 'dist', 'demo')
mkdirSync(OUT, { recursive: true })

await build({
  entryPoints: [join(HERE, 'demo', 'demo.ts')],
  outfile: join(OUT, 'demo.js'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: false,
  logLevel: 'warning'
})
for (const name of ['index.html', 'demo.css', 'sw.js']) {
  copyFileSync(join(HERE, 'demo', name), join(OUT, name))
}

if (process.argv.includes('--sizes')) {
  const sizes = {}
  for (const [label, external] of [['sdk', ['yjs', 'y-protocols', 'lib0', 'y-indexeddb']], ['sdk+deps', []]]) {
    const result = await build({
      entryPoints: [join(HERE, 'src', 'index.ts')],
      bundle: true, minify: true, format: 'esm', target: 'es2022', write: false, external
    })
    const code = result.outputFiles[0].contents
    sizes[label] = { minified: code.length, gzip: gzipSync(code, { level: 9 }).length }
  }
  const demo = readFileSync(join(OUT, 'demo.js'))
  sizes.demo = { minified: demo.length, gzip: gzipSync(demo, { level: 9 }).length }
  console.log(JSON.stringify(sizes))
}
