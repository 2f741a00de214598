// Direct, resumable uploads (docs/uploads.md): the bytes go from the client straight to the
// object store over presigned URLs. One PUT up to the API's multipart threshold (100 MiB,
// with the SHA-256 the API requires), parts above it, several at once. The upload's id is
// remembered (localStorage in a browser) under the file's fingerprint, so after a page
// reload the same file resumes: the API lists the parts the store holds and only the
// missing ones are sent. A file the project already has (same SHA-256) is not sent at all.
import { Backoff } from './backoff.js'
import { Emitter } from './emitter.js'
import { ApiError, type KilnApi, type Schemas } from './rest.js'

/** What the uploader reads: a browser File or Blob (name, size, slice). */
export interface UploadSource {
  readonly name?: string
  readonly size: number
  readonly type?: string
  readonly lastModified?: number
  slice(start: number, end: number): Blob
}

/** Where upload ids are kept between page loads. */
export interface UploadStore {
  get(key: string): string | null
  set(key: string, value: string): void
  delete(key: string): void
}

export interface UploadOptions {
  project: string
  /** The asset's name (default: the file's). */
  filename?: string
  /** Default: the file's type, else application/octet-stream. */
  contentType?: string
  /** Hex SHA-256 of the bytes, if known. Computed (crypto.subtle) when the file takes one PUT. */
  sha256?: string
  /** Parts in flight at once (multipart). Default 4. */
  concurrency?: number
  /** Attempts per PUT before giving up. Default 5. */
  attempts?: number
  signal?: AbortSignal
}

export interface UploadProgress {
  /** Bytes the store holds (parts held before a resume count). */
  sent: number
  total: number
  /** 'hashing' | 'sending' | 'completing' | 'done' */
  phase: 'hashing' | 'sending' | 'completing' | 'done'
  /** Set once the upload exists. */
  upload?: string
  resumed: boolean
}

export interface UploadResult {
  asset: Schemas['Asset']
  /** The project had these bytes already: nothing was sent. */
  deduplicated: boolean
  /** Parts found in the store at start (a resume). */
  resumedParts: number
}

/** Defaults to localStorage when there is one, else memory (lost with the process). */
export function defaultUploadStore(): UploadStore {
  const ls = (globalThis as { localStorage?: Storage }).localStorage
  if (ls) {
    return {
      get: (k) => ls.getItem(k),
      set: (k, v) => ls.setItem(k, v),
      delete: (k) => ls.removeItem(k),
    }
  }
  const m = new Map<string, string>()
  return { get: (k) => m.get(k) ?? null, set: (k, v) => void m.set(k, v), delete: (k) => void m.delete(k) }
}

/** PUTs bytes to a presigned URL and returns the ETag; onBytes reports bytes as they go (XHR) or at the end. */
export type PutTransport = (url: string, headers: Record<string, string>, body: Blob, onBytes: (n: number) => void, signal?: AbortSignal) => Promise<string>

const fetchPut: PutTransport = async (url, headers, body, onBytes, signal) => {
  const res = await fetch(url, { method: 'PUT', headers, body, signal })
  if (!res.ok) throw new PutError(res.status, await res.text())
  onBytes(body.size)
  return (res.headers.get('ETag') ?? '').replace(/"/g, '')
}

const xhrPut: PutTransport = (url, headers, body, onBytes, signal) =>
  new Promise((resolve, reject) => {
    const x = new XMLHttpRequest()
    x.open('PUT', url)
    for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v)
    x.upload.onprogress = (e) => onBytes(e.loaded)
    x.onload = () => {
      if (x.status >= 200 && x.status < 300) {
        onBytes(body.size)
        resolve((x.getResponseHeader('ETag') ?? '').replace(/"/g, ''))
      } else reject(new PutError(x.status, x.responseText))
    }
    x.onerror = () => reject(new PutError(0, 'network error'))
    x.onabort = () => reject(new DOMException('aborted', 'AbortError'))
    signal?.addEventListener('abort', () => x.abort(), { once: true })
    x.send(body)
  })

export class PutError extends Error {
  constructor(
    readonly status: number,
    body: string,
  ) {
    super(`PUT answered ${status}: ${body.slice(0, 300)}`)
    this.name = 'PutError'
  }
}

async function sha256Hex(blob: Blob): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer())
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

/**
 * Files up to this size are hashed before the upload starts (the API's default one-PUT
 * limit, `uploads.multipart_threshold_bytes`, where it requires the hash; and dedup). A
 * larger file is hashed only when the API asks (`sha256-required`) or the caller passes one.
 */
export const SINGLE_PUT_MAX = 100 * 1024 * 1024

export class Uploader extends Emitter<{ progress: UploadProgress }> {
  private readonly put: PutTransport

  constructor(
    private readonly api: KilnApi,
    private readonly store: UploadStore = defaultUploadStore(),
    put?: PutTransport,
  ) {
    super()
    this.put = put ?? (typeof XMLHttpRequest !== 'undefined' ? xhrPut : fetchPut)
  }

  /** The key an upload of `file` to `project` is remembered under. */
  static fingerprint(project: string, file: UploadSource, filename: string): string {
    return `kiln-upload:${project}:${filename}:${file.size}:${file.lastModified ?? 0}`
  }

  /** Uploads (or resumes) `file`; progress events as it goes. */
  async upload(file: UploadSource, o: UploadOptions): Promise<UploadResult> {
    const filename = o.filename ?? file.name ?? 'upload.bin'
    const key = Uploader.fingerprint(o.project, file, filename)
    const total = file.size
    const progress = (p: Omit<UploadProgress, 'total'>) => this.emit('progress', { ...p, total })

    let state: Schemas['UploadState'] | null = null
    const known = this.store.get(key)
    if (known) {
      try {
        const s = await this.api.getUpload(o.project, known)
        if (s.state === 'open') state = s
        else if (s.state === 'completed' && s.asset) {
          this.store.delete(key)
          const asset = await this.api.getAsset(o.project, s.asset)
          progress({ sent: total, phase: 'done', upload: s.id, resumed: true })
          return { asset, deduplicated: false, resumedParts: 0 }
        }
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) throw e
      }
      if (!state) this.store.delete(key)
    }

    let sha256 = o.sha256
    if (!state && !sha256 && total <= SINGLE_PUT_MAX) {
      progress({ sent: 0, phase: 'hashing', resumed: false })
      sha256 = await sha256Hex(file.slice(0, total))
    }
    let put: Schemas['PutInstructions'] | undefined
    if (!state) {
      const create = (hash?: string) =>
        this.api.createUpload(o.project, {
          filename,
          size: total,
          content_type: o.contentType || file.type || 'application/octet-stream',
          ...(hash ? { sha256: hash } : {}),
        })
      let started
      try {
        started = await create(sha256)
      } catch (e) {
        // A server whose one-PUT limit is above SINGLE_PUT_MAX wants the hash of a larger file.
        if (!(e instanceof ApiError && e.code === 'sha256-required') || sha256) throw e
        progress({ sent: 0, phase: 'hashing', resumed: false })
        sha256 = await sha256Hex(file.slice(0, total))
        started = await create(sha256)
      }
      if (started.body.deduplicated) {
        progress({ sent: total, phase: 'done', resumed: false })
        return { asset: started.body.asset, deduplicated: true, resumedParts: 0 }
      }
      state = { ...started.body.upload, missing: undefined, parts: [] }
      put = started.body.put
      this.store.set(key, state.id)
    } else {
      put = state.put
    }
    const resumed = Boolean(known && state.id === known)
    const id = state.id

    if (!state.multipart) {
      if (!put) throw new Error(`upload ${id}: the API gave no PUT instructions`)
      progress({ sent: 0, phase: 'sending', upload: id, resumed })
      await this.withRetries(o, () =>
        this.put(put!.url, put!.headers as Record<string, string>, file.slice(0, total), (n) => progress({ sent: n, phase: 'sending', upload: id, resumed }), o.signal),
      )
      return this.finish(o, key, id, total, resumed, 0)
    }

    const partSize = state.part_size ?? 0
    const count = state.part_count ?? 0
    const held = new Map<number, number>((state.parts ?? []).map((p) => [p.number, p.size]))
    const missing = state.missing ?? Array.from({ length: count }, (_, i) => i + 1).filter((n) => !held.has(n))
    const inFlight = new Map<number, number>()
    let done = [...held.values()].reduce((a, b) => a + b, 0)
    const report = () => {
      let f = 0
      for (const v of inFlight.values()) f += v
      progress({ sent: done + f, phase: 'sending', upload: id, resumed })
    }
    report()
    const queue = [...missing]
    const worker = async () => {
      while (queue.length) {
        if (o.signal?.aborted) throw new DOMException('aborted', 'AbortError')
        const batch = queue.splice(0, 1)
        const n = batch[0]!
        const start = (n - 1) * partSize
        const blob = file.slice(start, Math.min(total, start + partSize))
        await this.withRetries(o, async () => {
          const urls = await this.api.presignParts(o.project, id, [n])
          const u = urls.parts[0]!
          inFlight.set(n, 0)
          try {
            await this.put(u.url, {}, blob, (b) => {
              inFlight.set(n, b)
              report()
            }, o.signal)
          } finally {
            inFlight.delete(n)
          }
        })
        done += blob.size
        report()
      }
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency ?? 4, missing.length)) }, worker))
    return this.finish(o, key, id, total, resumed, held.size)
  }

  private async finish(o: UploadOptions, key: string, id: string, total: number, resumed: boolean, resumedParts: number): Promise<UploadResult> {
    this.emit('progress', { sent: total, total, phase: 'completing', upload: id, resumed })
    const done = await this.api.completeUpload(o.project, id)
    this.store.delete(key)
    this.emit('progress', { sent: total, total, phase: 'done', upload: id, resumed })
    return { asset: done.asset, deduplicated: false, resumedParts }
  }

  // A PUT that fails with a network error or a 5xx is sent again after a jittered wait.
  private async withRetries<T>(o: UploadOptions, f: () => Promise<T>): Promise<T> {
    const backoff = new Backoff({ baseMs: 500, maxMs: 8000 })
    const attempts = o.attempts ?? 5
    for (let i = 1; ; i++) {
      try {
        return await f()
      } catch (e) {
        const transient = (e instanceof PutError && (e.status === 0 || e.status >= 500)) || (e instanceof TypeError) ||
          (e instanceof ApiError && (e.status === 429 || e.status >= 500))
        if (!transient || i >= attempts || o.signal?.aborted) throw e
        await new Promise((r) => setTimeout(r, backoff.next()))
      }
    }
  }
}
