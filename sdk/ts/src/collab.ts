// The collaboration client for kiln.v1 (docs/protocol.md): one WebSocket per client with
// any number of rooms. It connects with backoff and full jitter, says hello, joins each room
// resuming from its (epoch, seq), honours `reconnect.after_ms` and the close codes, keeps a
// local scene replica per room with optimistic edits rolled back on `nack`, throttles
// ephemeral updates to one flush per tick, tracks presence and passes notifications on.
import { Backoff, type BackoffOptions } from './backoff.js'
import { Emitter } from './emitter.js'
import type { NotifyFrame, ServerFrame, WelcomeFrame } from './generated/protocol.js'
import type { PendingBatch } from './replica.js'
import { MAX_FRAME_BYTES } from './limits.js'
import { Room } from './room.js'
import { OpError } from './scene.js'

export { Room, type Member } from './room.js'

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

/** The runtime's own WebSocket (browsers, Node 22+). */
export const globalWebSocket: WebSocketFactory = (url, protocol) => {
  const WS = (globalThis as { WebSocket?: new (u: string, p: string) => WebSocketLike }).WebSocket
  if (!WS) throw new Error('no WebSocket in this runtime: pass options.webSocket')
  return new WS(url, protocol)
}

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
  /** The server's gateway.max_frame_bytes: larger batches are refused before sending. Default 256 KiB. */
  maxFrameBytes?: number
}

export type ConnectionState = 'connecting' | 'open' | 'waiting' | 'closed'

type ClientEvents = {
  state: { state: ConnectionState; code?: number; reason?: string; retryInMs?: number }
  welcome: WelcomeFrame
  notify: NotifyFrame
  /** An `error` frame (a refused eph) or a broken invariant. */
  error: { code: string; message: string }
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
  readonly maxFrameBytes: number
  private openedAt = 0
  private protocolCloses = 0

  constructor(private readonly options: CollabOptions) {
    super()
    this.backoff = new Backoff(options.backoff)
    this.ephIntervalMs = options.ephIntervalMs ?? 50
    this.opsPerSecond = options.opsPerSecond ?? 20
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES
    this.tokens = this.opsPerSecond
    this.factory = options.webSocket ?? globalWebSocket
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

  /**
   * Joins a room (`<project>/<scene>`, each part 1-64 characters of [A-Za-z0-9_-]; OpError
   * `invalid` otherwise): the room resumes by itself after reconnects.
   */
  join(room: string): Room {
    if (!/^[A-Za-z0-9_-]{1,64}\/[A-Za-z0-9_-]{1,64}$/.test(room)) {
      throw new OpError('invalid', `'${room}' is not <project>/<scene> (each 1-64 characters of [A-Za-z0-9_-])`)
    }
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

  /** @internal: a room's problem, told on `error`. */
  report(e: ClientEvents['error']): void {
    this.emit('error', e)
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
  // The bucket is smaller and slower than the server's (its burst, 0.9 of its rate): batches
  // that arrive closer together than they were sent still fit the server's.
  private pump(): void {
    if (this.pumpTimer) return
    const now = Date.now()
    const rate = 0.9 * this.opsPerSecond
    this.tokens = Math.min(this.opsPerSecond, this.tokens + ((now - this.tokensAt) * rate) / 1000)
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
      const wait = Math.ceil(((1 - this.tokens) * 1000) / (0.9 * this.opsPerSecond))
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
    // A connection that lived a while starts the backoff again; one closed at once (a
    // refusal right after the welcome) keeps growing it.
    if (this.openedAt && Date.now() - this.openedAt >= 5000) this.backoff.reset()
    this.openedAt = 0
    // The server closed for a frame it cannot take (4000, 4009, 1007) three times without an
    // ack between: the oldest unconfirmed edit is the likely cause; refuse it here.
    if (code === 4000 || code === 4009 || code === 1007) {
      if (++this.protocolCloses >= 3) {
        this.protocolCloses = 0
        for (const r of this.rooms.values()) r.dropOldest(`the server closed the connection (${code}: ${reason}) each time this edit was sent`)
      }
    }
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
        this.openedAt = Date.now()
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
        if (f.t === 'ack') this.protocolCloses = 0
        let room = 'room' in f && typeof f.room === 'string' ? this.rooms.get(f.room) : undefined
        // A nack naming no room (the request's room was malformed): its request id says whose.
        if (!room && 'id' in f && typeof f.id === 'number') room = [...this.rooms.values()].find((r) => r.owns(f.id as number))
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
