// The collaboration client for kiln.v1 (docs/protocol.md): one WebSocket per client with
// any number of rooms. It connects with backoff and full jitter, says hello, joins each room
// resuming from its (epoch, seq), honours `reconnect.after_ms` and the close codes, keeps a
// local scene replica per room with optimistic edits rolled back on `nack`, throttles
// ephemeral updates to one flush per tick, tracks presence and passes notifications on.
import { Backoff, type BackoffOptions } from './backoff.js'
import { Emitter } from './emitter.js'
import type {
  AckFrame,
  EphBatchFrame,
  JoinedFrame,
  NackCode,
  NackFrame,
  NotifyFrame,
  OpsFrame,
  PresenceFrame,
  SceneOp,
  ServerFrame,
  WelcomeFrame,
} from './generated/protocol.js'
import { type PendingBatch, type SceneChange, SceneReplica } from './replica.js'
import { type JsonValue, OpError, invert } from './scene.js'

export const SUBPROTOCOL = 'kiln.v1'

/** The part of the WebSocket API the client uses (the browser's, or `ws` in Node). */
export interface WebSocketLike {
  readonly readyState: number
  readonly protocol: string
  onopen: ((ev: unknown) => void) | null
  onmessage: ((ev: { data: unknown }) => void) | null
  onclose: ((ev: { code: number; reason: string }) => void) | null
  onerror: ((ev: unknown) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
}
export type WebSocketFactory = (url: string, protocol: string) => WebSocketLike

export interface CollabOptions {
  /** ws:// or wss:// URL of `GET /v1/collab`. */
  url: string
  /** A JWT, or a function that returns a fresh one (called before each connection). */
  token: string | (() => string | Promise<string>)
  /** Default: the global WebSocket (browsers, Node 22+). */
  webSocket?: WebSocketFactory
  backoff?: BackoffOptions
  /** ms between flushes of ephemeral updates (the server's gateway.tick_ms). Default 50. */
  ephIntervalMs?: number
  /**
   * Durable batches sent per second, with bursts of twice that (the server's
   * gateway.ops_per_second, default 20): faster edits wait here, in order, instead of being
   * refused with `rate_limited`. Default 20.
   */
  opsPerSecond?: number
}

export type ConnectionState = 'connecting' | 'open' | 'waiting' | 'closed'

export interface Member {
  user: string
  session: string
  name: string
  /** Latest ephemeral data per kind. */
  eph: Record<string, Record<string, JsonValue>>
}

type ClientEvents = {
  state: { state: ConnectionState; code?: number; reason?: string; retryInMs?: number }
  welcome: WelcomeFrame
  notify: NotifyFrame
  /** An `error` frame (a refused eph) or a broken invariant. */
  error: { code: string; message: string }
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
}

/** Close codes after which the client does not reconnect by itself. */
const FINAL = new Set([1000])

export class CollabClient extends Emitter<ClientEvents> {
  state: ConnectionState = 'closed'
  /** From the last welcome. */
  session = ''
  user: { id: string; name: string } | null = null
  heartbeatMs = 15_000

  private ws: WebSocketLike | null = null
  private readonly rooms = new Map<string, Room>()
  private readonly backoff: Backoff
  private nextId = 1
  private stopped = true
  private retryTimer: ReturnType<typeof setTimeout> | null = null
  private pingTimer: ReturnType<typeof setInterval> | null = null
  private lastFrameAt = 0
  private reconnectAfter: number | null = null
  private pendingHello = 0
  private waitingOpen: { resolve: () => void; reject: (e: Error) => void }[] = []
  private readonly factory: WebSocketFactory
  readonly ephIntervalMs: number
  // Batches waiting to be sent, in the order applied (across rooms), and the token bucket.
  private outbox: { room: Room; batch: PendingBatch }[] = []
  private tokens: number
  private tokensAt = Date.now()
  private pumpTimer: ReturnType<typeof setTimeout> | null = null
  private readonly opsPerSecond: number

  constructor(private readonly options: CollabOptions) {
    super()
    this.backoff = new Backoff(options.backoff)
    this.ephIntervalMs = options.ephIntervalMs ?? 50
    this.opsPerSecond = options.opsPerSecond ?? 20
    this.tokens = 2 * this.opsPerSecond
    this.factory =
      options.webSocket ??
      ((url, protocol) => {
        const WS = (globalThis as { WebSocket?: new (u: string, p: string) => WebSocketLike }).WebSocket
        if (!WS) throw new Error('no WebSocket in this runtime: pass options.webSocket')
        return new WS(url, protocol)
      })
  }

  /** Connects (and keeps reconnecting until close()); resolves at the first welcome. */
  connect(): Promise<void> {
    this.stopped = false
    const p = new Promise<void>((resolve, reject) => this.waitingOpen.push({ resolve, reject }))
    if (this.state === 'open') this.settleOpen(null)
    else if (!this.ws && !this.retryTimer) void this.open()
    return p
  }

  /** Closes the connection for good; rooms emit `left`. */
  close(): void {
    this.stopped = true
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = null
    this.stopTimers()
    const ws = this.ws
    this.ws = null
    ws?.close(1000, 'client closed')
    for (const r of [...this.rooms.values()]) r.end({ code: 'closed', reason: 'the client closed' })
    this.setState({ state: 'closed', code: 1000, reason: 'client closed' })
    this.settleOpen(new Error('closed'))
  }

  /** Joins a room (`<project>/<scene>`): the room resumes by itself after reconnects. */
  join(room: string): Room {
    const existing = this.rooms.get(room)
    if (existing) return existing
    const r = new Room(this, room)
    this.rooms.set(room, r)
    if (this.state === 'open') r.sendJoin()
    return r
  }

  /** @internal */
  requestId(): number {
    return this.nextId++
  }

  /** @internal: sends when open; returns whether it was sent. */
  send(frame: object): boolean {
    if (this.state !== 'open' || !this.ws) return false
    this.ws.send(JSON.stringify(frame))
    return true
  }

  /** @internal */
  forget(room: Room): void {
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name)
    this.outbox = this.outbox.filter((e) => e.room !== room)
  }

  /** @internal: queues a room's batches to send (after any of its batches queued already). */
  enqueue(room: Room, batches: readonly PendingBatch[]): void {
    for (const batch of batches) this.outbox.push({ room, batch })
    this.pump()
  }

  /** @internal: a room (re)joined: its unconfirmed batches are queued again, in their order. */
  requeue(room: Room, batches: readonly PendingBatch[]): void {
    this.outbox = this.outbox.filter((e) => e.room !== room)
    this.enqueue(room, batches)
  }

  /** Batches applied locally but not sent yet (paced, or waiting for a connection). */
  get queuedBatches(): number {
    return this.outbox.length
  }

  // Sends what the bucket allows, in order; a room not joined holds its own batches only.
  private pump(): void {
    if (this.pumpTimer) return
    const now = Date.now()
    this.tokens = Math.min(2 * this.opsPerSecond, this.tokens + ((now - this.tokensAt) * this.opsPerSecond) / 1000)
    this.tokensAt = now
    if (this.state !== 'open') return
    const held: { room: Room; batch: PendingBatch }[] = []
    while (this.outbox.length && this.tokens >= 1) {
      const e = this.outbox.shift()!
      if (!e.room.joined) {
        held.push(e)
        continue
      }
      this.send({ t: 'op', id: e.batch.id, room: e.room.name, ops: e.batch.ops })
      this.tokens -= 1
    }
    this.outbox = held.concat(this.outbox)
    if (this.outbox.some((e) => e.room.joined)) {
      const wait = Math.ceil(((1 - this.tokens) * 1000) / this.opsPerSecond)
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null
        this.pump()
      }, Math.max(1, wait))
    }
  }

  private setState(s: ClientEvents['state']): void {
    this.state = s.state
    this.emit('state', s)
  }

  private settleOpen(error: Error | null): void {
    const w = this.waitingOpen
    this.waitingOpen = []
    for (const x of w) (error ? x.reject(error) : x.resolve())
  }

  private async open(): Promise<void> {
    this.retryTimer = null
    if (this.stopped) return
    this.setState({ state: 'connecting' })
    let token: string
    try {
      token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token
    } catch (e) {
      this.retry(undefined, `no token: ${(e as Error).message}`)
      return
    }
    if (this.stopped) return
    let ws: WebSocketLike
    try {
      ws = this.factory(this.options.url, SUBPROTOCOL)
    } catch (e) {
      this.retry(undefined, (e as Error).message)
      return
    }
    this.ws = ws
    this.reconnectAfter = null
    ws.onopen = () => {
      if (this.ws !== ws) return
      this.pendingHello = this.nextId++
      ws.send(JSON.stringify({ t: 'hello', id: this.pendingHello, token }))
    }
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return
      this.lastFrameAt = Date.now()
      let frame: ServerFrame
      try {
        frame = JSON.parse(String(ev.data)) as ServerFrame
      } catch {
        this.emit('error', { code: 'invalid', message: 'the server sent a frame that is not JSON' })
        return
      }
      this.onFrame(frame)
    }
    ws.onerror = () => {}
    ws.onclose = (ev) => {
      if (this.ws !== ws) return
      this.ws = null
      this.onClosed(ev.code, ev.reason)
    }
  }

  private onClosed(code: number, reason: string): void {
    this.stopTimers()
    for (const r of this.rooms.values()) r.disconnected()
    if (this.stopped) return
    if (FINAL.has(code)) {
      this.setState({ state: 'closed', code, reason })
      return
    }
    // 4001 with a fixed token that expired or was refused: connecting again cannot help.
    if (code === 4001 && typeof this.options.token === 'string') {
      this.stopped = true
      for (const r of [...this.rooms.values()]) r.end({ code: 'closed', reason: `unauthenticated: ${reason}` })
      this.setState({ state: 'closed', code, reason })
      this.settleOpen(new Error(`unauthenticated: ${reason}`))
      return
    }
    // After `reconnect`, the server said how long to wait; otherwise back off with jitter.
    this.retry(code, reason, this.reconnectAfter ?? undefined)
  }

  private retry(code: number | undefined, reason: string, afterMs?: number): void {
    if (this.stopped) return
    const wait = afterMs ?? this.backoff.next()
    this.setState({ state: 'waiting', code, reason, retryInMs: wait })
    this.retryTimer = setTimeout(() => void this.open(), wait)
  }

  private stopTimers(): void {
    if (this.pingTimer) clearInterval(this.pingTimer)
    this.pingTimer = null
    if (this.pumpTimer) clearTimeout(this.pumpTimer)
    this.pumpTimer = null
  }

  private onFrame(f: ServerFrame): void {
    switch (f.t) {
      case 'welcome': {
        if (f.id !== this.pendingHello) return
        this.session = f.session
        this.user = { id: f.user.id, name: f.user.name }
        this.heartbeatMs = f.heartbeat_ms
        this.backoff.reset()
        this.setState({ state: 'open' })
        this.emit('welcome', f)
        this.startLiveness()
        for (const r of this.rooms.values()) r.sendJoin()
        this.settleOpen(null)
        return
      }
      case 'reconnect':
        this.reconnectAfter = f.after_ms
        return
      case 'notify':
        this.emit('notify', f)
        return
      case 'error':
        this.emit('error', { code: f.code, message: f.message })
        return
      case 'pong':
        return
      default: {
        const room = 'room' in f && typeof f.room === 'string' ? this.rooms.get(f.room) : undefined
        room?.onFrame(f)
      }
    }
  }

  // The browser answers the server's pings but cannot see them: a ping of our own each
  // heartbeat, and a connection silent for two heartbeats is closed and opened again.
  private startLiveness(): void {
    this.stopTimers()
    this.lastFrameAt = Date.now()
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > 2 * this.heartbeatMs) {
        const ws = this.ws
        this.ws = null
        ws?.close(4000, 'no frame for two heartbeats')
        this.onClosed(4000, 'no frame for two heartbeats')
        return
      }
      this.send({ t: 'ping', id: this.requestId() })
    }, this.heartbeatMs)
  }
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
    if (this.ended) throw new OpError('invalid', `not in room ${this.name}`)
    const undo = invert(this.replica.view, ops)
    const id = this.client.requestId()
    const { batch, change } = this.replica.local(id, ops)
    const seq = new Promise<number>((resolve, reject) => this.waiters.set(id, { resolve, reject }))
    seq.catch(() => {})
    this.emit('change', change)
    this.client.enqueue(this, [batch])
    return { seq, undo }
  }

  /** Ephemeral data of `kind` (cursor, selection, drag): the latest is sent once per tick. */
  eph(kind: string, data: Record<string, JsonValue>): void {
    this.ephPending.set(kind, data)
    if (!this.ephTimer) this.ephTimer = setTimeout(() => this.flushEph(), this.client.ephIntervalMs)
  }

  /** Leaves the room (answered by `left`). */
  leave(): void {
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
    for (const w of this.waiters.values()) w.reject(e)
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
    this.client['emit']('error', { code: 'invalid', message: `room ${this.name}: ${why}; joining again` })
    this.replica.epoch = ''
    if (this.joined) {
      this.client.send({ t: 'leave', id: this.client.requestId(), room: this.name })
      this.joined = false
      this.sendJoin()
    }
  }
}
