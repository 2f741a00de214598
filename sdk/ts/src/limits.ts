// What the server refuses by closing the connection (4000 malformed or too deep, 4009 too
// large) or by a nack the client can predict, checked before a frame is sent: a batch that
// would be refused is refused here, at once, and never sent (a frame the server closes the
// connection for would be sent again after every reconnect). docs/protocol.md, "Limits";
// protocol/kiln.v1.schema.json for the shapes.
import type { SceneOp } from './generated/protocol.js'
import { OpError } from './scene.js'

/** The server's defaults (gateway.max_frame_bytes, the JSON nesting limit). */
export const MAX_FRAME_BYTES = 256 * 1024
export const MAX_DEPTH = 64
const ID = /^[A-Za-z0-9_-]{1,64}$/
const FIELDS: Record<string, readonly string[]> = {
  create: ['op', 'entity', 'parent', 'index', 'props'],
  set: ['op', 'entity', 'key', 'value'],
  move: ['op', 'entity', 'parent', 'index'],
  delete: ['op', 'entity'],
}
const encoder = new TextEncoder()
const bytes = (s: string) => encoder.encode(s).length

/**
 * JSON the server parses: finite numbers only (JSON has no NaN or Infinity), no lone UTF-16
 * surrogates (not UTF-8), containers nested at most `maxDepth` deep counting from `depth`.
 * Returns the problem, or null.
 */
export function jsonProblem(v: unknown, depth: number, maxDepth = MAX_DEPTH): string | null {
  if (typeof v === 'number') return Number.isFinite(v) ? null : `${v} is not a JSON number (only finite numbers)`
  if (typeof v === 'string') return /\p{Cs}/u.test(v) ? 'a string holds a lone UTF-16 surrogate (not UTF-8)' : null
  if (v === null || typeof v === 'boolean') return null
  if (typeof v !== 'object') return `a ${typeof v} is not JSON`
  if (depth + 1 > maxDepth) return `nested deeper than ${maxDepth} (the frame's containers included)`
  for (const [k, x] of Array.isArray(v) ? v.entries() : Object.entries(v)) {
    if (typeof k === 'string' && /\p{Cs}/u.test(k)) return 'a key holds a lone UTF-16 surrogate'
    if (x === undefined) continue
    const p = jsonProblem(x, depth + 1, maxDepth)
    if (p) return p
  }
  return null
}

/** Throws OpError (invalid, too_large) when the server would refuse the batch or the frame carrying it. */
export function checkBatch(room: string, ops: readonly SceneOp[], maxFrameBytes = MAX_FRAME_BYTES): void {
  if (!Array.isArray(ops) || ops.length === 0) throw new OpError('invalid', "'ops' must not be empty")
  ops.forEach((op, i) => {
    const fail = (m: string) => {
      throw new OpError('invalid', `op ${i}: ${m}`, i)
    }
    const allowed = FIELDS[(op as { op?: string }).op ?? '']
    if (!allowed) fail(`unknown op '${(op as { op?: string }).op}'`)
    for (const k of Object.keys(op)) if (!allowed!.includes(k)) fail(`unknown field '${k}'`)
    if (!ID.test(op.entity)) fail("'entity' must be 1-64 characters of [A-Za-z0-9_-]")
    if ('parent' in op && !ID.test(op.parent)) fail("'parent' must be 1-64 characters of [A-Za-z0-9_-]")
    if ('index' in op && op.index !== undefined && (typeof op.index !== 'string' || bytes(op.index) > 256)) fail("'index' must be a string of at most 256 bytes")
    if (op.op === 'set' && (typeof op.key !== 'string' || op.key.length === 0 || bytes(op.key) > 128)) fail("'key' must be 1-128 bytes")
    if (op.op === 'set' && op.value === undefined) fail("'value' is required (null removes the key)")
    if (op.op === 'create' && op.props !== undefined) {
      if (typeof op.props !== 'object' || op.props === null || Array.isArray(op.props)) fail("'props' must be an object")
      for (const k of Object.keys(op.props!)) if (k.length === 0 || bytes(k) > 128) fail('property keys must be 1-128 bytes')
    }
  })
  // The frame {t, id, room, ops: [op, ...]}: the ops' values start three containers deep.
  const problem = jsonProblem(ops, 1)
  if (problem) throw new OpError('invalid', problem)
  const size = bytes(JSON.stringify({ t: 'op', id: Number.MAX_SAFE_INTEGER, room, ops }))
  if (size > maxFrameBytes) throw new OpError('too_large', `the batch's frame is ${size} bytes; the server takes at most ${maxFrameBytes} (gateway.max_frame_bytes)`)
}

/** Throws OpError when the server would refuse an eph update (kind 1-32 bytes, data an object of at most 4 KiB). */
export function checkEph(kind: string, data: unknown): void {
  if (typeof kind !== 'string' || kind.length === 0 || bytes(kind) > 32) throw new OpError('invalid', "'kind' must be 1-32 bytes")
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new OpError('invalid', "'data' must be an object")
  const problem = jsonProblem(data, 1)
  if (problem) throw new OpError('invalid', problem)
  if (bytes(JSON.stringify(data)) > 4096) throw new OpError('too_large', "'data' is larger than 4 KiB")
}
