// Vitest global setup: the generated types exist before any test imports them.
import { execFileSync } from 'node:child_process'
import path from 'node:path'

export default function setup(): void {
  execFileSync(process.execPath, [path.resolve(__dirname, '../scripts/generate.mjs')], { stdio: 'inherit' })
}
