// Every TypeScript example in docs/sdk.md type-checks against the SDK as it is (tsc, strict),
// so the guide cannot drift from the API it shows.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { expect, it } from 'vitest'

const root = path.resolve(__dirname, '..')
const guide = path.resolve(root, '../../docs/sdk.md')

it('the examples of docs/sdk.md type-check', () => {
  const blocks = [...readFileSync(guide, 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!)
  expect(blocks.length).toBeGreaterThanOrEqual(6)
  const dir = path.join(root, '.docs-check')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir)
  blocks.forEach((b, i) => writeFileSync(path.join(dir, `example${i}.ts`), `export {}\n${b}`))
  writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: '../tsconfig.json',
      compilerOptions: { noEmit: true, rootDir: '..', types: ['node', 'react'], paths: { '@kiln/sdk': ['../src/index.ts'] } },
      include: ['*.ts'],
    }),
  )
  try {
    execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], { encoding: 'utf8' })
  } catch (e) {
    const out = (e as { stdout?: string }).stdout ?? String(e)
    throw new Error(`docs/sdk.md examples do not type-check:\n${out}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
