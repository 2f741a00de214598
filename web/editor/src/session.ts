// Who is signed in: a token kept in localStorage (so a reload, and an upload resumed after
// it, keeps the user), from the development sign-in (POST /v1/dev/token, when kiln serve
// runs with auth.dev_tokens) or pasted (`kiln token --user ann --name Ann`).
import { KilnApi } from '@kiln/sdk'
import { h } from './dom.js'

const KEY = 'kiln-editor-token'

export interface Session {
  token: string
  user: { id: string; name: string }
  api: KilnApi
}

// The token's claims (for display; the server checks the token). base64url, then UTF-8.
function decode(token: string): { sub?: string; name?: string; exp?: number } {
  try {
    const part = (token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0))
    return JSON.parse(new TextDecoder().decode(bytes))
  } catch {
    return {}
  }
}

/** The stored session, if its token has not expired (checked again by the server). */
export function current(): Session | null {
  const token = localStorage.getItem(KEY)
  if (!token) return null
  const claims = decode(token)
  if (!claims.sub || (claims.exp ?? 0) * 1000 < Date.now()) {
    localStorage.removeItem(KEY)
    return null
  }
  return { token, user: { id: claims.sub, name: claims.name ?? claims.sub }, api: new KilnApi({ baseUrl: location.origin, token }) }
}

export function signOut(): void {
  localStorage.removeItem(KEY)
}

// A user id from a name for the development sign-in: its ASCII letters and digits, plus a
// hash of the whole name when anything else was dropped (so "李" and "王", or "Zoë" and
// "Zoe", stay different people).
function userId(name: string): string {
  const trimmed = name.trim()
  const ascii = trimmed.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48)
  if (ascii && /^[A-Za-z0-9 _-]{1,48}$/.test(trimmed)) return ascii
  let h = 2166136261
  for (const c of new TextEncoder().encode(trimmed)) h = Math.imul(h ^ c, 16777619)
  return `${ascii || 'user'}-${(h >>> 0).toString(36)}`
}

/** The sign-in screen; calls `done` with a session. */
export function signInView(done: (s: Session) => void): HTMLElement {
  const status = h('p', { class: 'status', id: 'signin-status' })
  const name = h('input', { id: 'signin-name', placeholder: 'Your name', autocomplete: 'nickname' })
  const pasted = h('textarea', { id: 'signin-token', placeholder: 'or paste a token (kiln token --user ann --name Ann)', rows: 3 })
  const accept = async (token: string) => {
    const probe = new KilnApi({ baseUrl: location.origin, token })
    await probe.me() // refused tokens end here
    localStorage.setItem(KEY, token)
    done(current()!)
  }
  const form = h(
    'form',
    {
      class: 'signin',
      onsubmit: async (e: Event) => {
        e.preventDefault()
        status.textContent = ''
        try {
          if (pasted.value.trim()) return await accept(pasted.value.trim())
          if (!name.value.trim()) throw new Error('Type your name, or paste a token.')
          const res = await fetch('/v1/dev/token', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ user: { id: userId(name.value), name: name.value.trim() } }),
          })
          if (res.status === 404) {
            throw new Error('Development sign-in is off on this server (auth.dev_tokens). Paste a token: kiln token --user ann --name Ann (in the directory of kiln-data, or with --data-dir)')
          }
          const body = await res.json()
          if (!res.ok) throw new Error(body.detail ?? res.statusText)
          await accept(body.token)
        } catch (err) {
          status.textContent = (err as Error).message
        }
      },
    },
    h('h1', {}, 'Kiln'),
    h('p', {}, 'Sign in to edit scenes with others.'),
    name,
    pasted,
    h('button', { type: 'submit', id: 'signin-go' }, 'Sign in'),
    status,
  )
  return form
}
