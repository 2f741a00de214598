// The scene model of kiln.v1 (docs/protocol.md, "Scene model" and "Ops"), applied locally:
// the same rules and refusal codes as the server's (collab/scene.cpp), so that an optimistic
// client predicts what the server will do. Pure: no I/O.
import type { CanonicalOp, Entity, NackCode, SceneOp, Snapshot } from './generated/protocol.js'

export const ROOT = 'root'
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** A refused op or batch: `code` is the server's nack code; `index` the op's place in its batch. */
export class OpError extends Error {
  constructor(
    readonly code: NackCode,
    message: string,
    readonly index = 0,
  ) {
    super(message)
    this.name = 'OpError'
  }
}

export interface SceneEntity {
  parent: string
  index: string
  props: Record<string, JsonValue>
}

/** A scene: entities by id (root implicit). Batches apply atomically. */
export class SceneState {
  private entities = new Map<string, SceneEntity>()
  private kids = new Map<string, Set<string>>() // parent -> children (unordered)

  private link(id: string, e: SceneEntity): void {
    this.entities.set(id, e)
    let set = this.kids.get(e.parent)
    if (!set) this.kids.set(e.parent, (set = new Set()))
    set.add(id)
  }
  private unlink(id: string): SceneEntity | undefined {
    const e = this.entities.get(id)
    if (!e) return undefined
    this.entities.delete(id)
    const set = this.kids.get(e.parent)
    set?.delete(id)
    if (set && set.size === 0) this.kids.delete(e.parent)
    return e
  }

  static fromSnapshot(s: Snapshot): SceneState {
    const scene = new SceneState()
    for (const [id, e] of Object.entries(s.entities)) {
      if (e) scene.link(id, { parent: e.parent, index: e.index, props: { ...(e.props as Record<string, JsonValue>) } })
    }
    return scene
  }

  clone(): SceneState {
    const c = new SceneState()
    for (const [id, e] of this.entities) c.link(id, { parent: e.parent, index: e.index, props: { ...e.props } })
    return c
  }

  get size(): number {
    return this.entities.size
  }
  has(id: string): boolean {
    return id === ROOT || this.entities.has(id)
  }
  get(id: string): Readonly<SceneEntity> | undefined {
    return this.entities.get(id)
  }
  ids(): IterableIterator<string> {
    return this.entities.keys()
  }

  /** Children of `id`, ordered as the server orders siblings: by index, then by id. */
  children(id: string): string[] {
    const out: [string, string][] = []
    for (const cid of this.kids.get(id) ?? []) out.push([this.entities.get(cid)!.index, cid])
    out.sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]))
    return out.map((x) => x[1])
  }

  snapshot(): Snapshot {
    const entities: Snapshot['entities'] = {}
    for (const [id, e] of this.entities) entities[id] = { parent: e.parent, index: e.index, props: { ...e.props } } as Entity
    return { entities }
  }

  /** Applies a batch atomically: every op, or none (throws OpError naming the op). */
  apply(ops: readonly (SceneOp | CanonicalOp)[]): void {
    this.applyUndoable(ops)
  }

  /**
   * Applies a batch atomically and returns what undoes it exactly (valid while nothing
   * applied after it is still applied: undo in reverse order). Throws OpError, changing nothing.
   */
  applyUndoable(ops: readonly (SceneOp | CanonicalOp)[]): () => void {
    const undo: (() => void)[] = []
    try {
      ops.forEach((op, i) => {
        try {
          this.applyOne(op, undo)
        } catch (e) {
          if (e instanceof OpError) throw new OpError(e.code, `op ${i}: ${e.message}`, i)
          throw e
        }
      })
    } catch (e) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]!()
      throw e
    }
    return () => {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]!()
    }
  }

  private applyOne(op: SceneOp | CanonicalOp, undo: (() => void)[]): void {
    const { entity } = op
    switch (op.op) {
      case 'create': {
        if (this.has(entity)) throw new OpError('exists', `entity '${entity}' exists`)
        if (!this.has(op.parent)) throw new OpError('not_found', `parent '${op.parent}' does not exist`)
        const c = canonical(op) as { index: string; props: Record<string, JsonValue> }
        this.link(entity, { parent: op.parent, index: c.index, props: c.props })
        undo.push(() => this.unlink(entity))
        return
      }
      case 'set': {
        if (entity === ROOT) throw new OpError('invalid', "'root' has no properties")
        const e = this.entities.get(entity)
        if (!e) throw new OpError('not_found', `entity '${entity}' does not exist`)
        const had = Object.prototype.hasOwnProperty.call(e.props, op.key)
        const old = e.props[op.key]
        if (op.value === null) delete e.props[op.key]
        else e.props[op.key] = op.value as JsonValue
        undo.push(() => {
          if (had) e.props[op.key] = old as JsonValue
          else delete e.props[op.key]
        })
        return
      }
      case 'move': {
        if (entity === ROOT) throw new OpError('invalid', "'root' cannot move")
        const e = this.entities.get(entity)
        if (!e) throw new OpError('not_found', `entity '${entity}' does not exist`)
        if (!this.has(op.parent)) throw new OpError('not_found', `parent '${op.parent}' does not exist`)
        if (this.isWithin(op.parent, entity)) throw new OpError('cycle', `'${op.parent}' is '${entity}' or inside it`)
        const [parent, index] = [e.parent, e.index]
        this.unlink(entity)
        e.parent = op.parent
        if (op.index !== undefined) e.index = op.index
        this.link(entity, e)
        undo.push(() => {
          this.unlink(entity)
          e.parent = parent
          e.index = index
          this.link(entity, e)
        })
        return
      }
      case 'delete': {
        if (entity === ROOT) throw new OpError('invalid', "'root' cannot be deleted")
        if (!this.entities.has(entity)) throw new OpError('not_found', `entity '${entity}' does not exist`)
        const gone: [string, SceneEntity][] = []
        const stack = [entity]
        while (stack.length) {
          const id = stack.pop()!
          for (const c of this.kids.get(id) ?? []) stack.push(c)
          gone.push([id, this.entities.get(id)!])
        }
        for (let k = gone.length - 1; k >= 0; k--) this.unlink(gone[k]![0])
        undo.push(() => {
          for (const [id, e] of gone) this.link(id, e)
        })
        return
      }
      default:
        throw new OpError('invalid', `unknown op '${(op as { op: string }).op}'`)
    }
  }

  /** Whether `candidate` is `ancestor` or inside it. */
  private isWithin(candidate: string, ancestor: string): boolean {
    let cur: string | undefined = candidate
    for (let guard = 0; cur !== undefined && guard <= this.entities.size + 1; guard++) {
      if (cur === ancestor) return true
      if (cur === ROOT) return false
      cur = this.entities.get(cur)?.parent
    }
    return false
  }
}

/** The op as the server relays it (create always carries index and props; null props dropped). */
export function canonical(op: SceneOp): CanonicalOp {
  if (op.op !== 'create') return op
  const props: Record<string, JsonValue> = {}
  for (const [k, v] of Object.entries(op.props ?? {})) if (v !== null && v !== undefined) props[k] = v as JsonValue
  return { op: 'create', entity: op.entity, parent: op.parent, index: op.index ?? '', props }
}

/** Structural equality of JSON values (object key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    const bb = b as unknown[]
    return a.length === bb.length && a.every((x, i) => jsonEqual(x, bb[i]))
  }
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) &&
    jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

// Byte order of UTF-16 code units equals byte order of UTF-8 for the BMP; ids are ASCII.
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/**
 * The batch that undoes `ops` applied to `state` as it is now (an editor's undo): delete
 * for create, the old value (or null) for set, the old parent and index for move, and the
 * deleted subtree re-created (parents first) for delete. `state` is left as it was.
 * Throws OpError when `ops` does not apply to `state`.
 */
export function invert(state: SceneState, ops: readonly SceneOp[]): SceneOp[] {
  const inverse: SceneOp[][] = []
  const undo: (() => void)[] = []
  try {
    ops.forEach((op, i) => {
      const inv: SceneOp[] = []
      const e = state.get(op.entity)
      switch (op.op) {
        case 'create':
          inv.push({ op: 'delete', entity: op.entity })
          break
        case 'set':
          if (e) inv.push({ op: 'set', entity: op.entity, key: op.key, value: (e.props[op.key] ?? null) as JsonValue })
          break
        case 'move':
          if (e) inv.push({ op: 'move', entity: op.entity, parent: e.parent, index: e.index })
          break
        case 'delete': {
          const stack = [op.entity]
          while (stack.length && e) {
            const id = stack.pop()!
            const x = state.get(id)!
            inv.push({ op: 'create', entity: id, parent: x.parent, index: x.index, props: { ...x.props } })
            stack.push(...state.children(id).reverse())
          }
          break
        }
      }
      try {
        undo.push(state.applyUndoable([op]))
      } catch (err) {
        if (err instanceof OpError) throw new OpError(err.code, err.message.replace(/^op 0/, `op ${i}`), i)
        throw err
      }
      inverse.push(inv)
    })
  } finally {
    for (let k = undo.length - 1; k >= 0; k--) undo[k]!()
  }
  return inverse.reverse().flat()
}
