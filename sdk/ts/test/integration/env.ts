// What the integration tests share: a real `kiln serve` (started by tests/e2e/test_sdk.py,
// which passes KILN_API and KILN_SERVICE_KEY), users with tokens, and a WebSocket factory
// (the `ws` package) that checks every frame the server sends against the protocol's schema.
import WebSocket from 'ws'
import { CollabClient, type WebSocketLike } from '../../src/collab.js'
import { KilnApi } from '../../src/rest.js'
import { assertServerFrame } from '../fake_socket.js'

export const API = process.env.KILN_API ?? ''
export const SERVICE_KEY = process.env.KILN_SERVICE_KEY ?? ''
export const ready = Boolean(API && SERVICE_KEY)

export const service = () => new KilnApi({ baseUrl: API, token: SERVICE_KEY })

/** A user with a token (POST /v1/tokens with the service key). */
export async function user(id: string, name: string): Promise<{ token: string; api: KilnApi }> {
  const t = await service().mintToken({ user: { id, name }, ttl_s: 3600 })
  return { token: t.token, api: new KilnApi({ baseUrl: API, token: t.token }) }
}

export const sockets: WebSocket[] = []
/** Every frame received is validated (a bad one fails the test through `invalid`). */
export const invalid: string[] = []

export function wsFactory(url: string, protocol: string): WebSocketLike {
  const ws = new WebSocket(url, protocol)
  sockets.push(ws)
  ws.addEventListener('message', (ev) => {
    try {
      assertServerFrame(JSON.parse(String(ev.data)))
    } catch (e) {
      invalid.push((e as Error).message)
    }
  })
  return ws as unknown as WebSocketLike
}

export function collab(token: string): CollabClient {
  const url = API.replace(/^http/, 'ws') + '/v1/collab'
  return new CollabClient({ url, token, webSocket: wsFactory, backoff: { baseMs: 50, maxMs: 500 } })
}

/** Resolves when `check` holds, polled on each event of `on`; rejects after `ms`. */
export function until(check: () => boolean, subscribe: (wake: () => void) => () => void, what: string, ms = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (check()) return resolve()
    const timer = setTimeout(() => {
      off()
      reject(new Error(`timed out waiting for ${what}`))
    }, ms)
    const off = subscribe(() => {
      if (check()) {
        clearTimeout(timer)
        off()
        resolve()
      }
    })
  })
}

let n = 0
export const unique = (p: string) => `${p}-${process.pid}-${Date.now().toString(36)}-${n++}`
