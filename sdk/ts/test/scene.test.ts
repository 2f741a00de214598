// The local scene model refuses what the server refuses (codes as in docs/protocol.md) and
// applies batches atomically; invert() undoes any batch exactly.
import { describe, expect, it } from 'vitest'
import type { SceneOp } from '../src/generated/protocol.js'
import { OpError, SceneState, invert } from '../src/scene.js'

function seeded(): SceneState {
  const s = new SceneState()
  s.apply([
    { op: 'create', entity: 'a', parent: 'root', index: '1', props: { name: 'a' } },
    { op: 'create', entity: 'b', parent: 'root', index: '0' },
    { op: 'create', entity: 'c', parent: 'a', props: { color: 'red', gone: null } },
    { op: 'create', entity: 'd', parent: 'c' },
  ])
  return s
}

function refusal(s: SceneState, ops: SceneOp[]): [string, number] {
  try {
    s.apply(ops)
  } catch (e) {
    expect(e).toBeInstanceOf(OpError)
    return [(e as OpError).code, (e as OpError).index]
  }
  throw new Error('applied')
}

describe('SceneState', () => {
  it('orders siblings by index, then id; drops null props on create', () => {
    const s = seeded()
    expect(s.children('root')).toEqual(['b', 'a'])
    expect(s.get('c')!.props).toEqual({ color: 'red' })
  })

  it('refuses with the server codes', () => {
    const s = seeded()
    expect(refusal(s, [{ op: 'create', entity: 'a', parent: 'root' }])).toEqual(['exists', 0])
    expect(refusal(s, [{ op: 'create', entity: 'x', parent: 'nope' }])).toEqual(['not_found', 0])
    expect(refusal(s, [{ op: 'set', entity: 'nope', key: 'k', value: 1 }])).toEqual(['not_found', 0])
    expect(refusal(s, [{ op: 'set', entity: 'root', key: 'k', value: 1 }])).toEqual(['invalid', 0])
    expect(refusal(s, [{ op: 'move', entity: 'a', parent: 'd' }])).toEqual(['cycle', 0])
    expect(refusal(s, [{ op: 'move', entity: 'a', parent: 'a' }])).toEqual(['cycle', 0])
    expect(refusal(s, [{ op: 'move', entity: 'root', parent: 'a' }])).toEqual(['invalid', 0])
    expect(refusal(s, [{ op: 'delete', entity: 'root' }])).toEqual(['invalid', 0])
    expect(refusal(s, [{ op: 'delete', entity: 'nope' }])).toEqual(['not_found', 0])
  })

  it('applies a batch atomically: a refused op leaves everything as it was', () => {
    const s = seeded()
    const before = s.snapshot()
    const [code, index] = refusal(s, [
      { op: 'set', entity: 'a', key: 'name', value: 'A' },
      { op: 'move', entity: 'b', parent: 'a', index: 'z' },
      { op: 'delete', entity: 'c' },
      { op: 'create', entity: 'c2', parent: 'c' }, // c was deleted in this batch
    ])
    expect([code, index]).toEqual(['not_found', 3])
    expect(s.snapshot()).toEqual(before)
    expect(s.children('a')).toEqual(['c'])
  })

  it('deletes a subtree', () => {
    const s = seeded()
    s.apply([{ op: 'delete', entity: 'a' }])
    expect([...s.ids()].sort()).toEqual(['b'])
  })

  it('invert undoes any batch exactly, and leaves the state as it was', () => {
    const batches: SceneOp[][] = [
      [{ op: 'create', entity: 'x', parent: 'a', props: { k: 1 } }, { op: 'move', entity: 'x', parent: 'b' }],
      [{ op: 'set', entity: 'c', key: 'color', value: 'blue' }, { op: 'set', entity: 'c', key: 'new', value: [1] }],
      [{ op: 'set', entity: 'c', key: 'color', value: null }],
      [{ op: 'move', entity: 'c', parent: 'root', index: 'q' }],
      [{ op: 'delete', entity: 'a' }],
      [{ op: 'set', entity: 'd', key: 'k', value: 1 }, { op: 'delete', entity: 'c' }, { op: 'create', entity: 'c', parent: 'b' }],
    ]
    for (const ops of batches) {
      const s = seeded()
      const before = s.snapshot()
      const undo = invert(s, ops)
      expect(s.snapshot()).toEqual(before)
      s.apply(ops)
      s.apply(undo)
      expect(s.snapshot()).toEqual(before)
    }
  })
})
