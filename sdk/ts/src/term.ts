// A terminal session's client (docs/terminals.md): attaches to `/v1/term` (subprotocol
// kiln.term.v1) from the offset it has read up to, and after a dropped connection, a
// slow-consumer close (1008) or a server restart (1012) attaches again from there with
// backoff and full jitter: nothing the server's scrollback holds is lost, and what it
// dropped is reported (`lost`). Output arrives as bytes, in order, each chunk once.
import { Backoff, type BackoffOptions } from './backoff.js'
import { globalWebSocket, type WebSocketFactory, type WebSocketLike } from './collab.js'
import { Emitter } from './emitter.js'

export interface TerminalOptions {
  /** ws:// or wss:// URL of `GET /v1/term`. */
  url: string
  /** A JWT, or a function that returns a fresh one (called before each attach). */
  token: string | (() => string | Promise<string>)
  /** The session's id (POST /v1/terminals). */
  session: string
  /** The offset to attach from: 0 for everything the server keeps. Default 0. */
  offset?: number
  /** Default: the global WebSocket (browsers, Node 22+). */
  webSocket?: WebSocketFactory
  backoff?: BackoffOptions
}

export interface TerminalExit {
  code: number
  signal: number
  reason: 'exited' | 'signaled' | 'out_of_memory' | 'destroyed'
  message: string
}

type TerminalEvents = {
  /** Output bytes from `offset`, in order. */
  data: { offset: number; bytes: Uint8Array }
  /** Attached (again): `lost` bytes between the offset asked and `from` the server no longer held. */
  attached: { from: number; lost: number; end: number }
  /** The session ended; no reconnect follows. */
  exit: TerminalExit
  state: { state: 'connecting' | 'open' | 'waiting' | 'closed'; code?: number; reason?: string; retryInMs?: number }
  /** An `in` or `resize` the server refused (the connection stays). */
  error: { message: string }
}

/** Closes after which the client does not attach again by itself (with the reason). */
const FINAL = new Set([1000, 4000, 4004, 4400])

function decode(b64: string): Uint8Array {
  const s = atob(b64)
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i)
  return out
}

export class TerminalClient extends Emitter<TerminalEvents> {
  private ws: WebSocketLike | null = null
  private readonly backoff: Backoff
  private readonly factory: WebSocketFactory
  private offset: number
  private stopped = false
  private ended = false
  private timer: ReturnType<typeof setTimeout> | null = null
  private size: { rows: number; cols: number } | null = null
  private authFailures = 0

  constructor(private readonly options: TerminalOptions) {
    super()
    this.offset = options.offset ?? 0
    this.backoff = new Backoff(options.backoff)
    this.factory = options.webSocket ?? globalWebSocket
  }

  /** The offset of the next byte expected: what to attach from later (e.g. after a reload). */
  get position(): number {
    return this.offset
  }

  /** Opens the connection (and keeps it open until close() or the session's end). */
  connect(): void {
    if (this.ws || this.stopped) return
    void this.open()
  }

  /** Keys typed (a string; UTF-8 on the wire). Dropped while not attached. */
  send(data: string): boolean {
    if (!this.ws || this.ws.readyState !== 1) return false
    this.ws.send(JSON.stringify({ t: 'in', data }))
    return true
  }

  /** The terminal's size; sent now and again after each reattach. */
  resize(rows: number, cols: number): void {
    this.size = { rows, cols }
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ t: 'resize', rows, cols }))
  }

  /** Stops: closes the connection; the session goes on running on the server. */
  close(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.ws?.close(1000, 'detached')
    this.ws = null
    this.emit('state', { state: 'closed' })
  }

  private async open(): Promise<void> {
    this.emit('state', { state: 'connecting' })
    const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token
    if (this.stopped) return
    const ws = this.factory(this.options.url, 'kiln.term.v1')
    this.ws = ws
    let attached = false
    let attachedAt = 0
    ws.onopen = () => {
      ws.send(JSON.stringify({ t: 'attach', token, session: this.options.session, offset: this.offset }))
    }
    ws.onmessage = (ev) => {
      let m: Record<string, unknown>
      try {
        m = JSON.parse(String(ev.data)) as Record<string, unknown>
      } catch {
        return
      }
      if (m.t === 'attached') {
        attached = true
        attachedAt = Date.now()
        this.authFailures = 0
        this.offset = Number(m.from)
        this.emit('attached', { from: Number(m.from), lost: Number(m.lost), end: Number(m.end) })
        this.emit('state', { state: 'open' })
        if (this.size) ws.send(JSON.stringify({ t: 'resize', ...this.size }))
      } else if (m.t === 'out') {
        const offset = Number(m.offset)
        const bytes = decode(String(m.data))
        if (offset + bytes.length <= this.offset) return  // had it
        const skip = Math.max(0, this.offset - offset)
        const fresh = skip > 0 ? bytes.subarray(skip) : bytes
        this.emit('data', { offset: offset + skip, bytes: fresh })
        this.offset = offset + bytes.length
      } else if (m.t === 'exit') {
        this.ended = true
        this.emit('exit', m as unknown as TerminalExit)
      } else if (m.t === 'error') {
        this.emit('error', { message: String(m.message) })
      }
    }
    ws.onclose = (ev) => {
      if (this.ws !== ws) return
      this.ws = null
      if (this.stopped) return
      // A token refused once may have expired: a token function gets one more try.
      const auth = ev.code === 4001 && typeof this.options.token === 'function' && ++this.authFailures < 2
      if (this.ended || FINAL.has(ev.code) || (ev.code === 4001 && !auth)) {
        this.stopped = true
        this.emit('state', { state: 'closed', code: ev.code, reason: ev.reason })
        return
      }
      // The backoff starts over only after a connection that lived: a server that attaches
      // and drops at once (a flood this client cannot keep up with) is not hammered.
      if (attached && Date.now() - attachedAt > 5_000) this.backoff.reset()
      const wait = this.backoff.next()
      this.emit('state', { state: 'waiting', code: ev.code, reason: ev.reason, retryInMs: wait })
      this.timer = setTimeout(() => void this.open(), wait)
    }
  }
}
