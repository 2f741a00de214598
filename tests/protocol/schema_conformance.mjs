// The kiln.v1 JSON Schema (protocol/kiln.v1.schema.json) against what it describes:
//  1. every JSON example in docs/protocol.md and docs/assets.md parses and is a valid frame;
//  2. on every frame of the fuzz corpus (fuzz/corpus/protocol), the C++ codec refuses what
//     the schema refuses, and accepts what it accepts, except the frames listed in
//     tests/protocol/differences.json, each with the reason the schema cannot say it.
// Run from the repository's root: node tests/protocol/schema_conformance.mjs FRAME_VERDICT
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(import.meta.url)
const Ajv2020 = require('ajv/dist/2020').default
const schema = JSON.parse(readFileSync('protocol/kiln.v1.schema.json', 'utf8'))
const ajv = new Ajv2020({ allErrors: false, strict: true, strictTypes: false, strictRequired: false })
ajv.addSchema(schema)
const client = ajv.getSchema(`${schema.$id}#/$defs/ClientFrame`)
const server = ajv.getSchema(`${schema.$id}#/$defs/ServerFrame`)
const CLIENT_TYPES = new Set(['hello', 'join', 'op', 'eph', 'leave', 'ping'])

let failures = 0
const fail = (what) => {
  failures++
  console.error(`FAIL ${what}`)
}

// 1. The docs' examples: a ```json block naming a "t" is one frame, or one frame per line.
function examples(file) {
  const text = readFileSync(file, 'utf8')
  const out = []
  for (const m of text.matchAll(/```json\n([\s\S]*?)```/g)) {
    const block = m[1].trim()
    const line = text.slice(0, m.index).split('\n').length
    if (!block.includes('"t":')) continue // not frames (a manifest, a snapshot)
    try {
      out.push({ where: `${file}:${line}`, frame: JSON.parse(block) })
      continue
    } catch {}
    for (const [i, l] of block.split('\n').entries()) {
      try {
        out.push({ where: `${file}:${line + 1 + i}`, frame: JSON.parse(l) })
      } catch (e) {
        fail(`${file}:${line + 1 + i}: an example that is not JSON (${e.message}): ${l}`)
      }
    }
  }
  return out
}
let checked = 0
for (const file of ['docs/protocol.md', 'docs/assets.md']) {
  for (const { where, frame } of examples(file)) {
    if (typeof frame?.t !== 'string') continue // not a frame (a manifest, a snapshot)
    // eph is both a client frame (kind, data) and a server frame (batch).
    const isClient = CLIENT_TYPES.has(frame.t) && !(frame.t === 'eph' && 'batch' in frame)
    const validate = isClient ? client : server
    checked++
    if (!validate(frame)) {
      fail(`${where}: ${isClient ? 'client' : 'server'} frame ${JSON.stringify(frame).slice(0, 120)}: ` +
        ajv.errorsText(validate.errors))
    }
  }
}
if (checked < 15) fail(`only ${checked} examples found in the docs`)
console.log(`docs: ${checked} example frames valid`)

// 2. The corpus: the codec's verdicts beside the schema's.
const corpus = 'fuzz/corpus/protocol'
const files = readdirSync(corpus).sort().map((f) => path.join(corpus, f))
const verdicts = execFileSync(process.argv[2], files, { encoding: 'utf8', maxBuffer: 1 << 26 })
  .trim().split('\n').map((l) => JSON.parse(l))
const differences = JSON.parse(readFileSync('tests/protocol/differences.json', 'utf8'))
const seen = new Set()
let accepted = 0
for (const v of verdicts) {
  const name = path.basename(v.file)
  let frame
  let schemaOk = false
  try {
    frame = JSON.parse(readFileSync(v.file, 'utf8'))
    schemaOk = client(frame)
  } catch {}
  const codecOk = v.verdict === 'accept'
  if (codecOk) accepted++
  if (!schemaOk && codecOk) {
    fail(`${name}: the schema refuses it (${ajv.errorsText(client.errors)}) but the codec accepts it`)
  } else if (schemaOk && !codecOk) {
    if (name in differences) seen.add(name)
    else fail(`${name}: the codec refuses it (${v.verdict}: ${v.message}) but the schema accepts it`)
  } else if (name in differences) {
    fail(`${name}: listed in differences.json, yet the codec and the schema agree`)
  }
}
for (const name of Object.keys(differences)) {
  if (!seen.has(name) && !files.some((f) => path.basename(f) === name)) fail(`${name}: listed but not in ${corpus}`)
}
if (accepted < 10 || verdicts.length - accepted < 10) fail(`corpus too one-sided: ${accepted}/${verdicts.length} accepted`)
console.log(`corpus: ${verdicts.length} frames, ${accepted} accepted, schema and codec agree on all ` +
  `but ${seen.size} listed differences`)
if (failures) {
  console.error(`${failures} failure(s)`)
  process.exit(1)
}
