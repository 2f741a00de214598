// A scripted WebSocket for the client's unit tests (the interaction with the server is what
// they test). Every frame the client sends must be a valid ClientFrame and every frame a
// test feeds it a valid ServerFrame (protocol/kiln.v1.schema.json, Ajv), so the recorded
// frames cannot drift from the protocol.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import Ajv2020 from 'ajv/dist/2020.js'
import type { WebSocketLike } from '../src/collab.js'

const schema = JSON.parse(readFileSync(path.resolve(__dirname, '../../../protocol/kiln.v1.schema.json'), 'utf8'))
const ajv = new Ajv2020({ strict: false })
ajv.addSchema(schema)
const clientFrame = ajv.getSchema(`${schema.$id}#/$defs/ClientFrame`)!
const serverFrame = ajv.getSchema(`${schema.$id}#/$defs/ServerFrame`)!

export function assertServerFrame(f: unknown): void {
  if (!serverFrame(f)) throw new Error(`not a ServerFrame: ${JSON.stringify(f)}: ${ajv.errorsText(serverFrame.errors)}`)
}
export function assertClientFrame(f: unknown): void {
  if (!clientFrame(f)) throw new Error(`not a ClientFrame: ${JSON.stringify(f)}: ${ajv.errorsText(clientFrame.errors)}`)
}

export class FakeSocket implements WebSocketLike {
  readyState = 0
  protocol = 'kiln.v1'
  onopen: ((ev: unknown) => void) | null = null
  onmessage: ((ev: { data: unknown }) => void) | null = null
  onclose: ((ev: { code: number; reason: string }) => void) | null = null
  onerror: ((ev: unknown) => void) | null = null
  sent: Record<string, unknown>[] = []
  closedWith: [number | undefined, string | undefined] | null = null

  constructor(
    readonly url: string,
    readonly subprotocol: string,
  ) {}

  send(data: string): void {
    const f = JSON.parse(data)
    assertClientFrame(f)
    this.sent.push(f)
  }
  close(code?: number, reason?: string): void {
    this.closedWith = [code, reason]
    this.readyState = 3
  }

  // The test's side.
  open(): void {
    this.readyState = 1
    this.onopen?.({})
  }
  receive(frame: Record<string, unknown>): void {
    assertServerFrame(frame)
    this.onmessage?.({ data: JSON.stringify(frame) })
  }
  drop(code: number, reason = ''): void {
    this.readyState = 3
    this.onclose?.({ code, reason })
  }
  /** Frames sent of type t, and forget them. */
  take(t?: string): Record<string, unknown>[] {
    const got = this.sent.filter((f) => t === undefined || f.t === t)
    this.sent = this.sent.filter((f) => !(t === undefined || f.t === t))
    return got
  }
}

/** A factory recording every socket the client opened. */
export function sockets(): { factory: (url: string, p: string) => FakeSocket; all: FakeSocket[]; last: () => FakeSocket } {
  const all: FakeSocket[] = []
  return {
    factory: (url, p) => {
      const s = new FakeSocket(url, p)
      all.push(s)
      return s
    },
    all,
    last: () => all[all.length - 1]!,
  }
}
