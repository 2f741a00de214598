// TerminalClient against a scripted socket: attach from the offset read, reattach after a
// drop without repeating or losing bytes, stop on the closes that are final.
import { describe, expect, it, vi } from 'vitest'
import { TerminalClient } from '../src/term.js'
import type { WebSocketLike } from '../src/collab.js'

class Sock implements WebSocketLike {
  readyState = 0
  protocol = 'kiln.term.v1'
  onopen: ((ev: unknown) => void) | null = null
  onmessage: ((ev: { data: unknown }) => void) | null = null
  onclose: ((ev: { code: number; reason: string }) => void) | null = null
  onerror: ((ev: unknown) => void) | null = null
  sent: Record<string, unknown>[] = []
  constructor(readonly url: string, readonly subprotocol: string) {}
  send(d: string): void {
    this.sent.push(JSON.parse(d))
  }
  close(): void {
    this.readyState = 3
  }
  open(): void {
    this.readyState = 1
    this.onopen?.({})
  }
  receive(f: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(f) })
  }
  drop(code: number): void {
    this.readyState = 3
    this.onclose?.({ code, reason: '' })
  }
}

const b64 = (s: string) => Buffer.from(s).toString('base64')
const text = (u: Uint8Array) => Buffer.from(u).toString()

function setup(offset = 0) {
  const all: Sock[] = []
  const t = new TerminalClient({
    url: 'ws://x/v1/term',
    token: 'tok',
    session: 's1',
    offset,
    webSocket: (u, p) => {
      const s = new Sock(u, p)
      all.push(s)
      return s
    },
    backoff: { random: () => 0 },
  })
  const got: string[] = []
  t.on('data', (d) => got.push(text(d.bytes)))
  return { t, all, got }
}

describe('TerminalClient', () => {
  it('attaches from its offset and reattaches from what it read, each byte once', async () => {
    vi.useFakeTimers()
    const { t, all, got } = setup(3)
    t.connect()
    await vi.runAllTimersAsync()
    all[0]!.open()
    expect(all[0]!.sent[0]).toEqual({ t: 'attach', token: 'tok', session: 's1', offset: 3 })
    all[0]!.receive({ t: 'attached', session: 's1', from: 3, lost: 0, end: 8 })
    all[0]!.receive({ t: 'out', offset: 3, data: b64('hello') })
    t.resize(30, 90)
    expect(all[0]!.sent.at(-1)).toEqual({ t: 'resize', rows: 30, cols: 90 })
    all[0]!.drop(1012)
    await vi.runAllTimersAsync()
    expect(all).toHaveLength(2)
    all[1]!.open()
    expect(all[1]!.sent[0]).toMatchObject({ t: 'attach', offset: 8 })
    all[1]!.receive({ t: 'attached', session: 's1', from: 8, lost: 0, end: 12 })
    expect(all[1]!.sent[1]).toEqual({ t: 'resize', rows: 30, cols: 90 }) // the size again
    // A frame overlapping what was read gives only the new part.
    all[1]!.receive({ t: 'out', offset: 6, data: b64('lo wor') })
    all[1]!.receive({ t: 'out', offset: 12, data: b64('ld') })
    expect(got.join('')).toBe('hello world')
    expect(t.position).toBe(14)
    vi.useRealTimers()
  })

  it('reports what the ring dropped', async () => {
    const { t, all } = setup(0)
    const seen: unknown[] = []
    t.on('attached', (a) => seen.push(a))
    t.connect()
    await Promise.resolve()
    await Promise.resolve()
    all[0]!.open()
    all[0]!.receive({ t: 'attached', session: 's1', from: 500, lost: 500, end: 600 })
    expect(seen).toEqual([{ from: 500, lost: 500, end: 600 }])
    expect(t.position).toBe(500)
  })

  it('stops on an exit and on the final closes', async () => {
    vi.useFakeTimers()
    for (const code of [1000, 4000, 4004, 4400, 4001]) {
      const { t, all } = setup()
      const states: string[] = []
      t.on('state', (s) => states.push(s.state))
      t.connect()
      await vi.runAllTimersAsync()
      all[0]!.open()
      all[0]!.drop(code)
      await vi.runAllTimersAsync()
      expect(all, `close ${code}`).toHaveLength(1)
      expect(states.at(-1)).toBe('closed')
    }
    const { t, all } = setup()
    const exits: unknown[] = []
    t.on('exit', (e) => exits.push(e))
    t.connect()
    await vi.runAllTimersAsync()
    all[0]!.open()
    all[0]!.receive({ t: 'attached', session: 's1', from: 0, lost: 0, end: 0 })
    all[0]!.receive({ t: 'exit', code: 3, signal: 0, reason: 'exited', message: 'exited with 3' })
    all[0]!.drop(1000)
    await vi.runAllTimersAsync()
    expect(exits).toEqual([{ t: 'exit', code: 3, signal: 0, reason: 'exited', message: 'exited with 3' }])
    expect(all).toHaveLength(1)
    vi.useRealTimers()
  })
})
