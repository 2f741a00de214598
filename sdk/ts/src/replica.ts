// A local replica of one room's scene with optimistic edits (docs/protocol.md, Promises 2):
// the view shows the confirmed scene (every batch the server sequenced, up to `seq`) with the
// client's own unacknowledged batches on top, in the order sent. A remote batch is applied
// under the pending ones (they are undone, it applies, they are applied again); an `ack`
// confirms the oldest pending batch; a `nack` rolls that batch back and re-applies the ones
// after it on the state without it, as the server validates them. Pure: no I/O.
import type { CanonicalOp, NackCode, SceneOp, Snapshot } from './generated/protocol.js'
import { OpError, SceneState, canonical, jsonEqual } from './scene.js'

export interface PendingBatch {
  /** The request id it was (or will be) sent with. */
  readonly id: number
  readonly ops: readonly SceneOp[]
  /** False when, rebased on a newer state, it no longer applies here (the server will refuse it too). */
  applies: boolean
}

export type ChangeSource = 'local' | 'remote' | 'rollback' | 'reset'
export interface SceneChange {
  source: ChangeSource
  /** Entity ids whose entity, parent, index or props may have changed (for 'reset': every id). */
  entities: Set<string>
  /** For 'rollback': the refused batch and why. */
  refused?: { batch: PendingBatch; code: NackCode; message: string }
}

export class SceneReplica {
  /** The scene as this client shows it: confirmed state plus pending batches. */
  readonly view: SceneState
  epoch = ''
  /** The last seq applied to the confirmed state. */
  seq = 0
  private pending: { batch: PendingBatch; undo: (() => void) | null }[] = []

  constructor(snapshot?: Snapshot) {
    this.view = snapshot ? SceneState.fromSnapshot(snapshot) : new SceneState()
  }

  get pendingBatches(): readonly PendingBatch[] {
    return this.pending.map((p) => p.batch)
  }

  /**
   * Replaces the confirmed state with a snapshot at (epoch, seq); pending batches are
   * applied again on top (those that no longer apply are kept, marked, for the server to refuse).
   */
  reset(snapshot: Snapshot, epoch: string, seq: number): SceneChange {
    const before = new Set(this.view.ids())
    const fresh = SceneState.fromSnapshot(snapshot)
    ;(this as { view: SceneState }).view = fresh
    this.epoch = epoch
    this.seq = seq
    for (const p of this.pending) this.applyPending(p)
    for (const id of fresh.ids()) before.add(id)
    return { source: 'reset', entities: before }
  }

  /** Applies the client's own batch optimistically; throws OpError (nothing changes) if it cannot apply. */
  local(id: number, ops: readonly SceneOp[]): { batch: PendingBatch; change: SceneChange } {
    const undo = this.view.applyUndoable(ops)
    const batch: PendingBatch = { id, ops, applies: true }
    this.pending.push({ batch, undo })
    return { batch, change: { source: 'local', entities: touched(ops) } }
  }

  /** Another member's batch at `seq` (seq must be this.seq + 1). */
  remote(seq: number, ops: readonly CanonicalOp[]): SceneChange {
    if (seq !== this.seq + 1) throw new Error(`ops frame out of order: seq ${seq} after ${this.seq}`)
    const entities = touched(ops)
    this.rebase(0, () => {
      this.view.apply(ops)
      this.seq = seq
    }, entities)
    return { source: 'remote', entities }
  }

  /**
   * The server acknowledged the oldest pending batch at `seq`. Returns a change when the
   * batch had not applied locally (it is applied now), else null.
   */
  ack(id: number, seq: number): SceneChange | null {
    const first = this.pending[0]
    if (!first || first.batch.id !== id) throw new Error(`ack ${id} does not match the oldest pending batch`)
    if (seq !== this.seq + 1) throw new Error(`ack out of order: seq ${seq} after ${this.seq}`)
    this.seq = seq
    if (first.undo) {
      this.pending.shift()
      return null
    }
    // Predicted to fail but the server took it: apply it under the others.
    const entities = touched(first.batch.ops)
    this.rebase(0, () => {
      this.pending.shift()
      this.view.apply(first.batch.ops)
    }, entities)
    return { source: 'remote', entities }
  }

  /** The server refused a pending batch: it is rolled back, later ones rebased. */
  nack(id: number, code: NackCode, message: string): SceneChange {
    const i = this.pending.findIndex((p) => p.batch.id === id)
    if (i < 0) throw new Error(`nack ${id} names no pending batch`)
    const batch = this.pending[i]!.batch
    const entities = touched(batch.ops)
    this.rebase(i, () => {
      this.pending.splice(i, 1)
    }, entities)
    return { source: 'rollback', entities, refused: { batch, code, message } }
  }

  /**
   * After a reconnect resumed with `since`: `frames` are the room's batches after `seq`
   * (joined.ops). Own batches among them (author `user`, equal ops, in the order sent)
   * confirm pending ones; the pending batches left were not applied and must be sent again.
   */
  recover(frames: readonly { seq: number; author: string; ops: CanonicalOp[] }[], user: string): SceneChange {
    const entities = new Set<string>()
    for (const f of frames) {
      const mine = this.pending[0]
      if (mine && f.author === user && sameOps(mine.batch.ops, f.ops)) {
        const c = this.ack(mine.batch.id, f.seq)
        if (c) for (const e of c.entities) entities.add(e)
      } else {
        for (const e of this.remote(f.seq, f.ops).entities) entities.add(e)
      }
    }
    for (const p of this.pending) for (const e of touched(p.batch.ops)) entities.add(e)
    return { source: 'remote', entities }
  }

  /** Undo pending[from..] (newest first), run `change`, apply them again in order. */
  private rebase(from: number, change: () => void, entities: Set<string>): void {
    const lifted = this.pending.slice(from)
    for (let k = lifted.length - 1; k >= 0; k--) lifted[k]!.undo?.()
    try {
      change()
    } finally {
      for (const p of this.pending.slice(from)) {
        this.applyPending(p)
        for (const e of touched(p.batch.ops)) entities.add(e)
      }
    }
  }

  private applyPending(p: { batch: PendingBatch; undo: (() => void) | null }): void {
    try {
      p.undo = this.view.applyUndoable(p.batch.ops)
      p.batch.applies = true
    } catch (e) {
      if (!(e instanceof OpError)) throw e
      p.undo = null
      p.batch.applies = false
    }
  }
}

function sameOps(sent: readonly SceneOp[], got: readonly CanonicalOp[]): boolean {
  return sent.length === got.length && sent.every((op, i) => jsonEqual(canonical(op), got[i]))
}

function touched(ops: readonly (SceneOp | CanonicalOp)[]): Set<string> {
  const s = new Set<string>()
  for (const op of ops) {
    s.add(op.entity)
    if ((op.op === 'create' || op.op === 'move') && op.parent) s.add(op.parent)
  }
  return s
}
