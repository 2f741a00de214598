// Builds the editor into dist/: one JavaScript bundle and one stylesheet with content-hashed
// names (kiln serve caches them for a year) and index.html naming them (served no-cache).
// The SDK is bundled from its sources (sdk/ts/src), so the editor always matches it.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execFileSync } from 'node:child_process'
import * as esbuild from 'esbuild'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const out = path.join(root, 'dist')
// The SDK's generated types must exist for the type check (the bundle does not need them).
execFileSync(process.execPath, [path.resolve(root, '../../sdk/ts/scripts/generate.mjs')], { stdio: 'inherit' })
rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
const result = await esbuild.build({
  entryPoints: { app: path.join(root, 'src/main.ts'), style: path.join(root, 'src/style.css') },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  outdir: out,
  entryNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
  alias: { '@kiln/sdk': path.resolve(root, '../../sdk/ts/src/index.ts') },
})
const outputs = Object.keys(result.metafile.outputs).map((f) => path.basename(f))
const js = outputs.find((f) => /^app-.*\.js$/.test(f))
const css = outputs.find((f) => /^style-.*\.css$/.test(f))
const html = readFileSync(path.join(root, 'src/index.html'), 'utf8')
  .replace('%APP%', `/editor/${js}`)
  .replace('%STYLE%', `/editor/${css}`)
writeFileSync(path.join(out, 'index.html'), html)
const bytes = Object.values(result.metafile.outputs).reduce((a, o) => a + o.bytes, 0)
console.log(`web/editor: dist/ (${outputs.length + 1} files, ${(bytes / 1024).toFixed(0)} KiB)`)
