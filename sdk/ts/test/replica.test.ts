// Optimistic edits: the view is the confirmed scene plus pending batches; a remote batch
// lands under them, an ack confirms, a nack rolls back and rebases what followed, and a
// resume recognises the author's own batches among the recovered ones.
import { describe, expect, it } from 'vitest'
import { SceneReplica } from '../src/replica.js'

const snapshot = { entities: { a: { parent: 'root', index: '', props: { n: 1 } } } }

describe('SceneReplica', () => {
  it('shows pending edits at once and confirms them on ack', () => {
    const r = new SceneReplica(snapshot)
    r.seq = 4
    r.local(1, [{ op: 'set', entity: 'a', key: 'n', value: 2 }])
    expect(r.view.get('a')!.props.n).toBe(2)
    expect(r.ack(1, 5)).toBeNull()
    expect(r.seq).toBe(5)
    expect(r.pendingBatches).toHaveLength(0)
    expect(r.view.get('a')!.props.n).toBe(2)
  })

  it('applies a remote batch under the pending ones (own edit stays on top)', () => {
    const r = new SceneReplica(snapshot)
    r.local(1, [{ op: 'set', entity: 'a', key: 'n', value: 2 }])
    const c = r.remote(1, [{ op: 'set', entity: 'a', key: 'n', value: 9 }, { op: 'set', entity: 'a', key: 'm', value: 3 }])
    expect(c.entities).toEqual(new Set(['a']))
    expect(r.view.get('a')!.props).toEqual({ n: 2, m: 3 })
    r.ack(1, 2)
    expect(r.view.get('a')!.props).toEqual({ n: 2, m: 3 }) // the server applied ours after theirs
  })

  it('rolls back a refused batch and rebases the later ones on the state without it', () => {
    const r = new SceneReplica(snapshot)
    r.local(1, [{ op: 'create', entity: 'b', parent: 'a' }])
    r.local(2, [{ op: 'set', entity: 'a', key: 'n', value: 7 }])
    r.local(3, [{ op: 'set', entity: 'b', key: 'k', value: true }])
    const c = r.nack(1, 'too_large', 'scene full')
    expect(c.source).toBe('rollback')
    expect(c.refused!.code).toBe('too_large')
    expect(r.view.has('b')).toBe(false)
    expect(r.view.get('a')!.props.n).toBe(7)
    // Batch 3 depended on 1: it no longer applies here (the server will refuse it too).
    expect(r.pendingBatches.map((b) => [b.id, b.applies])).toEqual([[2, true], [3, false]])
    r.ack(2, 1)
    r.nack(3, 'not_found', "op 0: entity 'b' does not exist")
    expect(r.view.snapshot()).toEqual({ entities: { a: { parent: 'root', index: '', props: { n: 7 } } } })
  })

  it('a remote delete under a pending edit of the same entity: the edit stops applying', () => {
    const r = new SceneReplica(snapshot)
    r.local(1, [{ op: 'set', entity: 'a', key: 'n', value: 2 }])
    r.remote(1, [{ op: 'delete', entity: 'a' }])
    expect(r.view.has('a')).toBe(false)
    expect(r.pendingBatches[0]!.applies).toBe(false)
  })

  it('refuses frames out of order (the caller resynchronises)', () => {
    const r = new SceneReplica(snapshot)
    expect(() => r.remote(2, [{ op: 'delete', entity: 'a' }])).toThrow(/out of order/)
    r.local(1, [{ op: 'delete', entity: 'a' }])
    expect(() => r.ack(2, 1)).toThrow(/oldest pending/)
  })

  it('recover: own batches among the recovered are confirmed, the rest stay pending to be sent again', () => {
    const r = new SceneReplica(snapshot)
    r.epoch = 'e1'
    r.seq = 10
    r.local(1, [{ op: 'create', entity: 'b', parent: 'root' }]) // reached the server
    r.local(2, [{ op: 'set', entity: 'b', key: 'k', value: 1 }]) // lost with the connection
    r.recover(
      [
        { seq: 11, author: 'bob', ops: [{ op: 'set', entity: 'a', key: 'n', value: 5 }] },
        { seq: 12, author: 'ann', ops: [{ op: 'create', entity: 'b', parent: 'root', index: '', props: {} }] },
      ],
      'ann',
    )
    expect(r.seq).toBe(12)
    expect(r.pendingBatches.map((b) => b.id)).toEqual([2])
    expect(r.view.get('b')!.props).toEqual({ k: 1 })
    expect(r.view.get('a')!.props.n).toBe(5)
  })

  it('recover: an equal batch by another author does not confirm ours', () => {
    const r = new SceneReplica(snapshot)
    r.local(1, [{ op: 'set', entity: 'a', key: 'n', value: 5 }])
    r.recover([{ seq: 1, author: 'bob', ops: [{ op: 'set', entity: 'a', key: 'n', value: 5 }] }], 'ann')
    expect(r.pendingBatches.map((b) => b.id)).toEqual([1])
  })

  it('reset replaces the confirmed state and keeps pending edits on top', () => {
    const r = new SceneReplica(snapshot)
    r.local(1, [{ op: 'set', entity: 'a', key: 'n', value: 2 }])
    r.reset({ entities: { a: { parent: 'root', index: '', props: { n: 0 } }, z: { parent: 'a', index: '', props: {} } } }, 'e2', 30)
    expect([r.epoch, r.seq]).toEqual(['e2', 30])
    expect(r.view.get('a')!.props.n).toBe(2)
    expect(r.view.children('a')).toEqual(['z'])
  })
})
