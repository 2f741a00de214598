// One joined room of the collaboration client (collab.ts): its scene replica with
// optimistic edits, its members with their ephemeral data, and its part of the protocol
// (joined, ack, nack, ops, presence, eph, left). The client owns the connection and calls in.
import type { CollabClient } from './collab.js'
import { Emitter } from './emitter.js'
import type {
  AckFrame,
  EphBatchFrame,
  JoinedFrame,
  NackCode,
  NackFrame,
  OpsFrame,
  PresenceFrame,
  SceneOp,
  ServerFrame,
} from './generated/protocol.js'
import { type PendingBatch, type SceneChange, SceneReplica } from './replica.js'
import { checkBatch, checkEph } from './limits.js'
import { type JsonValue, OpError, invert } from './scene.js'

export interface Member {
  user: string
  session: string
  name: string
  /** Latest ephemeral data per kind. */
  eph: Record<string, Record<string, JsonValue>>
}


type RoomEvents = {
  /** The view changed (own edit, another member's, a rollback, a reset after rejoin). */
  change: SceneChange
  /** Members joined or left (and the whole list on each join). */
  presence: { members: ReadonlyMap<string, Member> }
  /** Ephemeral data of other members arrived. */
  eph: EphBatchFrame['batch']
  /** The room is joined (again): `recovered` says whether the replica resumed. */
  joined: { recovered: boolean; seq: number; epoch: string }
  /** The session is no longer in the room and will not rejoin: why. */
  left: { code?: NackCode | 'closed'; reason: string }
}

interface Waiter {
  resolve: (seq: number) => void
  reject: (e: OpError) => void
  settled: Promise<void>
}


/** One joined room: its scene replica, members, and edits. */
export class Room extends Emitter<RoomEvents> {
  readonly replica = new SceneReplica()
  readonly members = new Map<string, Member>()
  /** Resolves at the first `joined`; rejects when the join is refused. */
  readonly ready: Promise<void>
  joined = false
  private joinId = 0
  private ended = false
  private leaving = false
  private readyResolve!: () => void
  private readyReject!: (e: OpError) => void
  private readonly waiters = new Map<number, Waiter>()
  private ephPending = new Map<string, Record<string, JsonValue>>()
  private ephTimer: ReturnType<typeof setTimeout> | null = null
  private joinRetry: ReturnType<typeof setTimeout> | null = null

  constructor(
    private readonly client: CollabClient,
    readonly name: string,
  ) {
    super()
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve
      this.readyReject = reject
    })
    this.ready.catch(() => {})
  }

  /** The scene as shown: confirmed plus pending edits. */
  get scene() {
    return this.replica.view
  }

  /**
   * Applies a batch now (optimistically) and sends it; resolves with its seq once the server
   * acknowledged it as durable, rejects with OpError on a nack (the view is rolled back).
   * Throws OpError at once when the batch does not apply to the view (nothing is sent).
   * Sent in order with every other batch of this client; queued while disconnected.
   */
  apply(ops: SceneOp[]): { seq: Promise<number>; undo: SceneOp[] } {
    if (this.ended || this.leaving) throw new OpError('invalid', `not in room ${this.name}`)
    checkBatch(this.name, ops, this.client.maxFrameBytes)
    const undo = invert(this.replica.view, ops)
    const id = this.client.requestId()
    const { batch, change } = this.replica.local(id, ops)
    let waiter!: Waiter
    const seq = new Promise<number>((resolve, reject) => {
      waiter = { resolve, reject, settled: Promise.resolve() }
    })
    waiter.settled = seq.then(
      () => {},
      () => {},
    )
    this.waiters.set(id, waiter)
    this.emit('change', change)
    this.client.enqueue(this, [batch])
    return { seq, undo }
  }

  /** Ephemeral data of `kind` (cursor, selection, drag): the latest is sent once per tick. */
  eph(kind: string, data: Record<string, JsonValue>): void {
    checkEph(kind, data)
    this.ephPending.set(kind, data)
    if (!this.ephTimer) this.ephTimer = setTimeout(() => this.flushEph(), this.client.ephIntervalMs)
  }

  /**
   * Leaves the room once the server answered every edit sent (each promise settles as acked
   * or refused); no edit is taken meanwhile. Resolves when the room is left.
   */
  async leave(): Promise<void> {
    if (this.ended) return
    this.leaving = true
    await Promise.allSettled([...this.waiters.values()].map((w) => w.settled))
    if (this.joined) this.client.send({ t: 'leave', id: this.client.requestId(), room: this.name })
    this.end({ reason: 'left' })
  }

  private flushEph(): void {
    this.ephTimer = null
    if (!this.joined) {
      this.ephPending.clear()
      return
    }
    for (const [kind, data] of this.ephPending) this.client.send({ t: 'eph', room: this.name, kind, data })
    this.ephPending.clear()
  }

  /**
   * @internal: the server closed the connection each time the oldest unconfirmed edit was
   * sent (a frame it cannot parse): refuse that edit here, rolled back, so it is not sent again.
   */
  dropOldest(reason: string): boolean {
    const b = this.replica.pendingBatches[0]
    if (!b) return false
    this.onNack({ t: 'nack', id: b.id, room: this.name, code: 'invalid', message: reason })
    return true
  }

  /** @internal: whether a request id is this room's (its join or one of its edits). */
  owns(id: number): boolean {
    return id === this.joinId || this.waiters.has(id)
  }

  /** @internal */
  sendJoin(): void {
    if (this.ended) return
    this.joinId = this.client.requestId()
    const since = this.replica.epoch ? { epoch: this.replica.epoch, seq: this.replica.seq } : undefined
    this.client.send({ t: 'join', id: this.joinId, room: this.name, ...(since ? { since } : {}) })
  }

  /** @internal: the connection dropped; the room rejoins when it is back. */
  disconnected(): void {
    this.joined = false
    if (this.joinRetry) clearTimeout(this.joinRetry)
    this.joinRetry = null
    if (this.members.size) {
      this.members.clear()
      this.emit('presence', { members: this.members })
    }
  }

  /** @internal */
  end(why: RoomEvents['left']): void {
    if (this.ended) return
    this.ended = true
    this.joined = false
    if (this.ephTimer) clearTimeout(this.ephTimer)
    if (this.joinRetry) clearTimeout(this.joinRetry)
    this.client.forget(this)
    const e = new OpError(why.code && why.code !== 'closed' ? why.code : 'unavailable', why.reason)
    this.readyReject(e)
    const unknown = new OpError('unavailable', `${why.reason}: the room ended before the server answered this edit; it may or may not have been applied`)
    for (const w of this.waiters.values()) w.reject(unknown)
    this.waiters.clear()
    this.emit('left', why)
  }

  /** @internal */
  onFrame(f: ServerFrame): void {
    switch (f.t) {
      case 'joined':
        return this.onJoined(f)
      case 'ack':
        return this.onAck(f)
      case 'nack':
        return this.onNack(f)
      case 'ops':
        return this.onOps(f)
      case 'presence':
        return this.onPresence(f)
      case 'eph':
        return this.onEph(f)
      case 'left':
        if (f.id === undefined) this.end({ reason: f.reason ?? 'the server ended the membership' })
        return
    }
  }

  private onJoined(f: JoinedFrame): void {
    if (f.id !== this.joinId) return
    const me = this.client.user?.id ?? ''
    let change: SceneChange
    if (f.recovered) {
      change = this.replica.recover(f.ops ?? [], me)
    } else {
      change = this.replica.reset(f.snapshot ?? { entities: {} }, f.epoch, f.seq)
    }
    this.replica.epoch = f.epoch
    this.confirmSettled()
    this.members.clear()
    for (const m of f.presence) {
      this.members.set(m.session, { user: m.user, session: m.session, name: m.name, eph: (m.eph ?? {}) as Member['eph'] })
    }
    this.joined = true
    this.readyResolve()
    // Batches not (known to be) applied are sent again, in the order first sent.
    this.client.requeue(this, this.replica.pendingBatches)
    this.emit('change', change)
    this.emit('presence', { members: this.members })
    this.emit('joined', { recovered: f.recovered, seq: f.seq, epoch: f.epoch })
  }

  // Batches that recovery confirmed resolve their waiters.
  private confirmSettled(): void {
    const pending = new Set(this.replica.pendingBatches.map((b) => b.id))
    for (const [id, w] of this.waiters) {
      if (!pending.has(id)) {
        this.waiters.delete(id)
        w.resolve(this.replica.seq)
      }
    }
  }

  private onAck(f: AckFrame): void {
    try {
      const change = this.replica.ack(f.id, f.seq)
      if (change) this.emit('change', change)
    } catch (e) {
      return this.resync((e as Error).message)
    }
    const w = this.waiters.get(f.id)
    this.waiters.delete(f.id)
    w?.resolve(f.seq)
  }

  private onNack(f: NackFrame): void {
    if (f.id === this.joinId) {
      if (f.code === 'unavailable') {
        this.joinRetry = setTimeout(() => this.sendJoin(), f.after_ms ?? 1000)
        return
      }
      this.end({ code: f.code, reason: f.message })
      return
    }
    if (f.id === undefined || !this.waiters.has(f.id)) return
    let change: SceneChange
    try {
      change = this.replica.nack(f.id, f.code, f.message)
    } catch (e) {
      return this.resync((e as Error).message)
    }
    const w = this.waiters.get(f.id)!
    this.waiters.delete(f.id)
    this.emit('change', change)
    const err = new OpError(f.code, f.message) as OpError & { afterMs?: number; batch?: PendingBatch }
    if (f.after_ms) err.afterMs = f.after_ms
    w.reject(err)
  }

  private onOps(f: OpsFrame): void {
    if (!this.joined) return
    try {
      this.emit('change', this.replica.remote(f.seq, f.ops))
    } catch (e) {
      this.resync((e as Error).message)
    }
  }

  private onPresence(f: PresenceFrame): void {
    for (const m of f.joined) this.members.set(m.session, { user: m.user, session: m.session, name: m.name, eph: {} })
    for (const s of f.left) this.members.delete(s)
    this.emit('presence', { members: this.members })
  }

  private onEph(f: EphBatchFrame): void {
    for (const e of f.batch) {
      const m = this.members.get(e.session)
      if (m) m.eph[e.kind] = e.data as Record<string, JsonValue>
    }
    this.emit('eph', f.batch)
  }

  // The replica no longer matches the server (a frame out of order): join again without
  // `since`, which answers a whole snapshot.
  private resync(why: string): void {
    this.client.report({ code: 'invalid', message: `room ${this.name}: ${why}; joining again` })
    this.replica.epoch = ''
    if (this.joined) {
      this.client.send({ t: 'leave', id: this.client.requestId(), room: this.name })
      this.joined = false
      this.sendJoin()
    }
  }
}
