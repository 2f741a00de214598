// What the server would refuse by closing the connection is refused before sending (and the
// room is left in peace), what it would nack is refused at once: the reconnect loop the
// review found (a too-deep or too-large batch sent again after every reconnect) cannot start.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CollabClient } from '../src/collab.js'
import { MAX_FRAME_BYTES, checkBatch, checkEph } from '../src/limits.js'
import { OpError } from '../src/scene.js'
import { sockets } from './fake_socket.js'

const ROOM = 'proj1/level-3'
const nested = (n: number): unknown => (n === 0 ? 1 : [nested(n - 1)])
const code = (f: () => void): string => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(OpError)
    return (e as OpError).code
  }
  return 'accepted'
}

describe('checkBatch', () => {
  it('takes what the server takes and refuses what it refuses', () => {
    const set = (value: unknown) => () => checkBatch(ROOM, [{ op: 'set', entity: 'a', key: 'k', value }])
    expect(code(set(nested(61)))).toBe('accepted') // 64 containers with the frame's own three
    expect(code(set(nested(62)))).toBe('invalid') // the server closes 4000 "too deep"
    expect(code(set([1, NaN]))).toBe('invalid') // JSON has no NaN: it would arrive as null
    expect(code(set({ x: Infinity }))).toBe('invalid')
    expect(code(set('\ud800'))).toBe('invalid') // not UTF-8: the server closes 4000
    expect(code(set('😀 ok'))).toBe('accepted')
    expect(code(set('x'.repeat(MAX_FRAME_BYTES)))).toBe('too_large') // would close 4009
    expect(code(() => checkBatch(ROOM, []))).toBe('invalid')
    expect(code(() => checkBatch(ROOM, [{ op: 'delete', entity: 'a b' }]))).toBe('invalid')
    expect(code(() => checkBatch(ROOM, [{ op: 'create', entity: 'a', parent: 'root', colour: 'red' } as never]))).toBe('invalid')
    expect(code(() => checkBatch(ROOM, [{ op: 'set', entity: 'a', key: 'é'.repeat(65), value: 1 }]))).toBe('invalid') // 130 bytes
    expect(code(() => checkBatch(ROOM, [{ op: 'move', entity: 'a', parent: 'b', index: 'é'.repeat(129) }]))).toBe('invalid')
  })
  it('checks eph as the server does', () => {
    expect(code(() => checkEph('k'.repeat(33), {}))).toBe('invalid')
    expect(code(() => checkEph('cursor', { x: 'y'.repeat(5000) }))).toBe('too_large')
    expect(code(() => checkEph('cursor', { x: NaN }))).toBe('invalid')
    expect(code(() => checkEph('cursor', { x: 1 }))).toBe('accepted')
  })
})

describe('the client with the limits', () => {
  beforeEach(() => vi.useFakeTimers())
  afterEach(() => vi.useRealTimers())

  async function joined() {
    const s = sockets()
    const client = new CollabClient({ url: 'ws://kiln/v1/collab', token: 'jwt', webSocket: s.factory, backoff: { random: () => 0 } })
    const ready = client.connect()
    await vi.advanceTimersByTimeAsync(0)
    const welcomeAndJoin = async (recovered: boolean) => {
      s.last().open()
      const hello = s.last().take('hello')[0]!
      s.last().receive({ t: 'welcome', id: hello.id, session: 's1', node: 'n', user: { id: 'ann', name: 'Ann' }, heartbeat_ms: 15000 })
      const join = s.last().take('join')[0]
      if (join) {
        s.last().receive(recovered
          ? { t: 'joined', id: join.id, room: ROOM, epoch: 'e', seq: 1, recovered: true, ops: [], presence: [] }
          : { t: 'joined', id: join.id, room: ROOM, epoch: 'e', seq: 1, recovered: false, snapshot: { entities: { a: { parent: 'root', index: '', props: {} } } }, presence: [] })
      }
    }
    await welcomeAndJoin(false)
    await ready
    const room = client.join(ROOM)
    const join = s.last().take('join')[0]!
    s.last().receive({ t: 'joined', id: join.id, room: ROOM, epoch: 'e', seq: 1, recovered: false, snapshot: { entities: { a: { parent: 'root', index: '', props: {} } } }, presence: [] })
    return { client, room, s, welcomeAndJoin }
  }

  it('a batch the server would close the connection for throws and is never sent', async () => {
    const { room, s } = await joined()
    const before = room.scene.snapshot()
    expect(() => room.apply([{ op: 'set', entity: 'a', key: 'deep', value: nested(100) as never }])).toThrow(OpError)
    expect(() => room.apply([{ op: 'set', entity: 'a', key: 'big', value: 'x'.repeat(300_000) }])).toThrow(/256|262144/)
    expect(s.last().take('op')).toEqual([])
    expect(room.scene.snapshot()).toEqual(before)
  })

  it('a room name that is not <project>/<scene> is refused at once', async () => {
    const { client } = await joined()
    expect(() => client.join('')).toThrow(OpError)
    expect(() => client.join('a/b/c')).toThrow(/project/)
  })

  it('a nack naming no room reaches the room by its request id', async () => {
    const { client, s } = await joined()
    const other = client.join('proj1/other')
    const join = s.last().take('join')[0]!
    s.last().receive({ t: 'nack', id: join.id, code: 'invalid', message: "'room' must be <project>/<scene>" })
    await expect(other.ready).rejects.toMatchObject({ code: 'invalid' })
  })

  it('leave waits for the edits sent: acked edits resolve, then the room is left', async () => {
    const { room, s } = await joined()
    const a = room.apply([{ op: 'set', entity: 'a', key: 'k', value: 1 }])
    const b = room.apply([{ op: 'set', entity: 'a', key: 'k', value: 2 }])
    const [oa, ob] = s.last().take('op')
    const left = room.leave()
    expect(() => room.apply([{ op: 'set', entity: 'a', key: 'k', value: 3 }])).toThrow(OpError)
    await vi.advanceTimersByTimeAsync(0)
    expect(s.last().take('leave')).toEqual([])
    s.last().receive({ t: 'ack', id: oa!.id, room: ROOM, seq: 2 })
    s.last().receive({ t: 'ack', id: ob!.id, room: ROOM, seq: 3 })
    await left
    await expect(a.seq).resolves.toBe(2)
    await expect(b.seq).resolves.toBe(3)
    expect(s.last().take('leave')).toHaveLength(1)
  })

  it('an edit the server closes the connection for three times running is refused and rolled back', async () => {
    const { room, s, welcomeAndJoin } = await joined()
    const edit = room.apply([{ op: 'set', entity: 'a', key: 'k', value: 'odd' }])
    for (let i = 0; i < 3; i++) {
      expect(s.last().take('op')).toHaveLength(1)
      s.last().drop(4000, 'malformed JSON')
      await vi.advanceTimersByTimeAsync(0)
      if (i < 2) await welcomeAndJoin(true)
    }
    await expect(edit.seq).rejects.toMatchObject({ code: 'invalid' })
    expect(room.scene.get('a')!.props.k).toBeUndefined()
  })
})
