// The collaboration client against recorded server frames (validated against the protocol's
// schema by the fake socket): handshake, joins with resume, acks and nacks, reconnect with
// after_ms, backoff with full jitter, close codes, eph throttling, presence, notifications.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Backoff } from '../src/backoff.js'
import { CollabClient } from '../src/collab.js'
import { OpError } from '../src/scene.js'
import { type FakeSocket, sockets } from './fake_socket.js'

const ROOM = 'proj1/level-3'
const welcome = (id: number) => ({ t: 'welcome', id, session: 's-ann', node: 'gw-1', user: { id: 'ann', name: 'Ann' }, heartbeat_ms: 15000 })

async function flush() {
  await vi.advanceTimersByTimeAsync(0)
}

/** Connects a client on a fake socket and answers its hello. */
async function connected(opts: Partial<ConstructorParameters<typeof CollabClient>[0]> = {}) {
  const s = sockets()
  const client = new CollabClient({ url: 'ws://kiln/v1/collab', token: 'jwt', webSocket: s.factory, backoff: { random: () => 0.5 }, ...opts })
  const ready = client.connect()
  await flush()
  s.last().open()
  const [hello] = s.last().take('hello')
  expect(hello).toMatchObject({ t: 'hello', token: 'jwt' })
  s.last().receive(welcome(hello!.id as number))
  await ready
  return { client, s }
}

function joinReply(sock: FakeSocket, extra: Record<string, unknown>) {
  const [join] = sock.take('join')
  sock.receive({ t: 'joined', id: join!.id, room: ROOM, presence: [], ...extra })
  return join!
}

beforeEach(() => {
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

describe('CollabClient', () => {
  it('says hello with the subprotocol and joins; the snapshot becomes the view', async () => {
    const { client, s } = await connected()
    expect(s.last().subprotocol).toBe('kiln.v1')
    expect(client.user).toEqual({ id: 'ann', name: 'Ann' })
    const room = client.join(ROOM)
    const join = joinReply(s.last(), {
      epoch: 'e1', seq: 44, recovered: false,
      snapshot: { entities: { cube: { parent: 'root', index: 'a0', props: { color: 'red' } } } },
      presence: [{ user: 'bob', session: 's-bob', name: 'Bob', eph: { cursor: { x: 3, y: 9 } } }],
    })
    expect(join.since).toBeUndefined()
    await room.ready
    expect(room.scene.get('cube')!.props).toEqual({ color: 'red' })
    expect([room.replica.epoch, room.replica.seq]).toEqual(['e1', 44])
    expect(room.members.get('s-bob')!.eph.cursor).toEqual({ x: 3, y: 9 })
  })

  it('applies edits optimistically; ack resolves the seq, nack rolls back and rejects', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    const changes: string[] = []
    room.on('change', (c) => changes.push(c.source))
    const a = room.apply([{ op: 'create', entity: 'lamp', parent: 'root', props: { on: true } }])
    const b = room.apply([{ op: 'set', entity: 'lamp', key: 'on', value: false }])
    expect(room.scene.get('lamp')!.props.on).toBe(false)
    const [opA, opB] = s.last().take('op')
    s.last().receive({ t: 'ack', id: opA!.id, room: ROOM, seq: 1 })
    s.last().receive({ t: 'nack', id: opB!.id, room: ROOM, code: 'forbidden', message: 'viewer' })
    await expect(a.seq).resolves.toBe(1)
    await expect(b.seq).rejects.toMatchObject({ code: 'forbidden' })
    expect(room.scene.get('lamp')!.props.on).toBe(true)
    expect(changes).toEqual(['local', 'local', 'rollback'])
    // Undo of the acked batch: delete.
    expect(a.undo).toEqual([{ op: 'delete', entity: 'lamp' }])
  })

  it('paces batches under the server\'s rate (20/s, burst 40): bursts of 20 at 18/s, in order', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    room.apply([{ op: 'create', entity: 'a', parent: 'root' }])
    for (let i = 0; i < 99; i++) room.apply([{ op: 'set', entity: 'a', key: 'n', value: i }])
    expect(s.last().take('op')).toHaveLength(20)
    expect(client.queuedBatches).toBe(80)
    await vi.advanceTimersByTimeAsync(1000)
    const next = s.last().take('op')
    expect(next.length).toBeGreaterThanOrEqual(17)
    expect(next.length).toBeLessThanOrEqual(19)
    await vi.advanceTimersByTimeAsync(4000)
    const rest = s.last().take('op')
    expect(next.length + rest.length).toBe(80)
    expect(rest.at(-1)!.ops).toEqual([{ op: 'set', entity: 'a', key: 'n', value: 98 }])
  })

  it('a batch that cannot apply locally throws and is not sent', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    expect(() => room.apply([{ op: 'delete', entity: 'ghost' }])).toThrow(OpError)
    expect(s.last().take('op')).toEqual([])
  })

  it('other members\' ops apply in seq order; a gap makes the room join again for a snapshot', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    s.last().receive({ t: 'ops', room: ROOM, seq: 1, author: 'bob', ops: [{ op: 'create', entity: 'x', parent: 'root', index: '', props: {} }] })
    expect(room.scene.has('x')).toBe(true)
    const errors: string[] = []
    client.on('error', (e) => errors.push(e.message))
    s.last().receive({ t: 'ops', room: ROOM, seq: 3, author: 'bob', ops: [{ op: 'delete', entity: 'x' }] })
    expect(errors[0]).toMatch(/out of order/)
    expect(s.last().take('leave')).toHaveLength(1)
    const [rejoin] = s.last().take('join')
    expect(rejoin!.since).toBeUndefined()
  })

  it('after reconnect{after_ms} and close 1012 it waits after_ms, then resumes from (epoch, seq) and resends what was not applied', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 10, recovered: false, snapshot: { entities: {} } })
    const first = room.apply([{ op: 'create', entity: 'a', parent: 'root' }])
    const second = room.apply([{ op: 'set', entity: 'a', key: 'k', value: 1 }])
    s.last().take('op')
    s.last().receive({ t: 'reconnect', after_ms: 2000 })
    s.last().drop(1012, 'restarting')
    // Edits while disconnected are queued, not sent.
    const third = room.apply([{ op: 'set', entity: 'a', key: 'k', value: 2 }])
    expect(client.state).toBe('waiting')
    await vi.advanceTimersByTimeAsync(1999)
    expect(s.all).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(s.all).toHaveLength(2)
    const sock = s.last()
    sock.open()
    sock.receive(welcome(sock.take('hello')[0]!.id as number))
    const [join] = sock.take('join')
    expect(join!.since).toEqual({ epoch: 'e1', seq: 10 })
    // The first batch reached the room before the restart; the second did not.
    sock.receive({
      t: 'joined', id: join!.id, room: ROOM, epoch: 'e1', seq: 11, recovered: true, presence: [],
      ops: [{ t: 'ops', room: ROOM, seq: 11, author: 'ann', ops: [{ op: 'create', entity: 'a', parent: 'root', index: '', props: {} }] }],
    })
    await expect(first.seq).resolves.toBe(11)
    const resent = sock.take('op')
    expect(resent.map((f) => f.ops)).toEqual([[{ op: 'set', entity: 'a', key: 'k', value: 1 }], [{ op: 'set', entity: 'a', key: 'k', value: 2 }]])
    sock.receive({ t: 'ack', id: resent[0]!.id, room: ROOM, seq: 12 })
    sock.receive({ t: 'ack', id: resent[1]!.id, room: ROOM, seq: 13 })
    await expect(second.seq).resolves.toBe(12)
    await expect(third.seq).resolves.toBe(13)
    expect(room.scene.get('a')!.props).toEqual({ k: 2 })
  })

  it('a dropped connection reconnects with full-jitter backoff, doubling the cap', async () => {
    const waits: number[] = []
    const { client, s } = await connected({ backoff: { baseMs: 100, maxMs: 1000, random: () => 0.999 } })
    client.on('state', (e) => e.state === 'waiting' && waits.push(e.retryInMs!))
    for (let i = 0; i < 6; i++) {
      s.last().drop(1006)
      await vi.advanceTimersByTimeAsync(waits[waits.length - 1]!)
      await flush()
    }
    expect(waits).toEqual([99, 199, 399, 799, 999, 999])
    // A connection refused right after its welcome does not start again from the base...
    s.last().open()
    s.last().receive(welcome(s.last().take('hello')[0]!.id as number))
    s.last().drop(4000, 'malformed JSON')
    expect(waits[waits.length - 1]).toBe(999)
    // ...one that lived five seconds does.
    await vi.advanceTimersByTimeAsync(999)
    s.last().open()
    s.last().receive(welcome(s.last().take('hello')[0]!.id as number))
    await vi.advanceTimersByTimeAsync(5000)
    s.last().drop(1006)
    expect(waits[waits.length - 1]).toBe(99)
  })

  it('full jitter draws uniformly from [0, cap)', () => {
    const seq = [0, 0.25, 0.5, 0.75]
    let i = 0
    const b = new Backoff({ baseMs: 1000, maxMs: 1000, random: () => seq[i++ % seq.length]! })
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([0, 250, 500, 750])
  })

  it('4001 with a fixed token closes for good; with a token function it fetches a new one', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    const left: string[] = []
    room.on('left', (e) => left.push(e.reason))
    s.last().drop(4001, 'token expired')
    expect(client.state).toBe('closed')
    expect(left).toEqual(['unauthenticated: token expired'])
    await vi.advanceTimersByTimeAsync(60_000)
    expect(s.all).toHaveLength(1)

    let n = 0
    const t = sockets()
    const c2 = new CollabClient({ url: 'ws://kiln/v1/collab', token: () => `jwt-${++n}`, webSocket: t.factory, backoff: { random: () => 0 } })
    void c2.connect()
    await flush()
    t.last().open()
    t.last().drop(4001, 'token expired')
    await vi.advanceTimersByTimeAsync(0)
    await flush()
    t.last().open()
    expect(t.last().take('hello')[0]!.token).toBe('jwt-2')
  })

  it('a refused join ends the room with the reason; unavailable retries after after_ms', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    const [j1] = s.last().take('join')
    s.last().receive({ t: 'nack', id: j1!.id, room: ROOM, code: 'unavailable', message: 'database', after_ms: 500 })
    await vi.advanceTimersByTimeAsync(499)
    expect(s.last().take('join')).toEqual([])
    await vi.advanceTimersByTimeAsync(1)
    const [j2] = s.last().take('join')
    s.last().receive({ t: 'nack', id: j2!.id, room: ROOM, code: 'forbidden', message: 'no role in the project' })
    await expect(room.ready).rejects.toMatchObject({ code: 'forbidden' })
  })

  it('the server ending a membership (scene deleted) ends the room; other rooms go on', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    const why: string[] = []
    room.on('left', (e) => why.push(e.reason))
    s.last().receive({ t: 'left', room: ROOM, reason: 'scene level-3 was deleted' })
    expect(why).toEqual(['scene level-3 was deleted'])
    expect(client.join(ROOM)).not.toBe(room)
  })

  it('eph: the latest per kind, at most once per tick', async () => {
    const { client, s } = await connected({ ephIntervalMs: 50 })
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    for (let i = 0; i < 30; i++) {
      room.eph('cursor', { x: i, y: 0 })
      if (i === 10) room.eph('selection', { ids: ['a'] })
      await vi.advanceTimersByTimeAsync(5)
    }
    await vi.advanceTimersByTimeAsync(50)
    const eph = s.last().take('eph')
    // 150 ms of updates every 5 ms: three or four flushes, not thirty, and the last value wins.
    expect(eph.filter((f) => f.kind === 'cursor').length).toBeLessThanOrEqual(4)
    expect(eph.filter((f) => f.kind === 'selection')).toHaveLength(1)
    expect(eph.filter((f) => f.kind === 'cursor').at(-1)!.data).toEqual({ x: 29, y: 0 })
  })

  it('presence and eph of others; notifications pass through', async () => {
    const { client, s } = await connected()
    const room = client.join(ROOM)
    joinReply(s.last(), { epoch: 'e1', seq: 0, recovered: false, snapshot: { entities: {} } })
    s.last().receive({ t: 'presence', room: ROOM, joined: [{ user: 'bob', session: 's-bob', name: 'Bob' }], left: [] })
    s.last().receive({ t: 'eph', room: ROOM, batch: [{ user: 'bob', session: 's-bob', kind: 'cursor', data: { x: 1 } }] })
    expect(room.members.get('s-bob')!.eph.cursor).toEqual({ x: 1 })
    s.last().receive({ t: 'presence', room: ROOM, joined: [], left: ['s-bob'] })
    expect(room.members.size).toBe(0)
    const notes: unknown[] = []
    client.on('notify', (n) => notes.push(n))
    s.last().receive({ t: 'notify', kind: 'asset', event: 'ready', levels: 6, project: 'proj1', asset: 'a1', name: 'terrain.obj' })
    s.last().receive({ t: 'notify', kind: 'build', id: 'b1' })
    expect(notes).toHaveLength(2)
  })

  it('a connection silent for two heartbeats is closed and opened again', async () => {
    const { client, s } = await connected()
    expect(client.heartbeatMs).toBe(15000)
    await vi.advanceTimersByTimeAsync(15000)
    expect(s.last().take('ping')).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(30001)
    expect(s.all[0]!.closedWith?.[0]).toBe(4000)
    expect(client.state).toBe('waiting')
  })
})
