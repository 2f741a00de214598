// Uploads and assets through the SDK against a real `kiln serve` (started with a 5 MiB
// multipart threshold and 5 MiB parts): one PUT with the SHA-256 computed, dedup, parts in
// parallel with progress, a resume after an abort (as after a page reload) that sends only
// the missing parts, and a model that the pipeline turns into levels (notified over collab).
import { createHash } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { selectLevels } from '../../src/lod.js'
import type { KilnApi } from '../../src/rest.js'
import { type UploadProgress, type UploadStore, Uploader } from '../../src/uploads.js'
import { collab, ready, unique, until, user } from './env.js'

const MiB = 1 << 20

function bytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b[i] = x & 255
  }
  return b
}
const file = (data: Uint8Array<ArrayBuffer>, name: string, type = 'application/octet-stream') => new File([data], name, { type, lastModified: 1 })
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
function memoryStore(): UploadStore & { m: Map<string, string> } {
  const m = new Map<string, string>()
  return { m, get: (k) => m.get(k) ?? null, set: (k, v) => void m.set(k, v), delete: (k) => void m.delete(k) }
}
async function download(api: KilnApi, project: string, asset: string): Promise<Uint8Array> {
  const a = await api.getAsset(project, asset)
  const res = await fetch(a.download.url)
  expect(res.status).toBe(200)
  return new Uint8Array(await res.arrayBuffer())
}

describe.skipIf(!ready)('uploads and assets against kiln serve', () => {
  let ann: { token: string; api: KilnApi }
  let project: string
  beforeAll(async () => {
    ann = await user(unique('ann'), 'Ann')
    project = unique('up')
    await ann.api.createProject({ id: project, name: 'Uploads' })
  })

  it('one PUT with the SHA-256 computed; the same bytes again are deduplicated', async () => {
    const data = bytes(300_000, 7)
    const up = new Uploader(ann.api, memoryStore())
    const phases: string[] = []
    up.on('progress', (p) => phases.at(-1) !== p.phase && phases.push(p.phase))
    const r = await up.upload(file(data, 'rock.bin'), { project })
    expect(r.deduplicated).toBe(false)
    expect(r.asset.sha256).toBe(sha(data))
    expect(phases).toEqual(['hashing', 'sending', 'completing', 'done'])
    expect(sha(await download(ann.api, project, r.asset.id))).toBe(sha(data))
    const again = await new Uploader(ann.api, memoryStore()).upload(file(data, 'rock.bin'), { project })
    expect(again).toMatchObject({ deduplicated: true, asset: { id: r.asset.id } })
  })

  it('parts in parallel; aborted halfway and resumed, only the missing parts are sent', async () => {
    const data = bytes(23 * MiB + 123, 11) // five parts of 5 MiB
    const store = memoryStore()
    const abort = new AbortController()
    const first = new Uploader(ann.api, store)
    const seen: UploadProgress[] = []
    first.on('progress', (p) => {
      seen.push(p)
      if (p.sent >= 2 * 5 * MiB) abort.abort()
    })
    await expect(first.upload(file(data, 'terrain.raw'), { project, concurrency: 2, signal: abort.signal })).rejects.toThrow()
    expect(store.m.size).toBe(1) // remembered for the resume
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.sent).toBeGreaterThanOrEqual(seen[i - 1]!.sent)

    // "After a page reload": a new uploader, the same store and file.
    const second = new Uploader(ann.api, store)
    const progress: UploadProgress[] = []
    second.on('progress', (p) => progress.push(p))
    const r = await second.upload(file(data, 'terrain.raw'), { project, concurrency: 3 })
    expect(r.resumedParts).toBeGreaterThanOrEqual(1)
    expect(progress[0]!.resumed).toBe(true)
    expect(progress[0]!.sent).toBeGreaterThanOrEqual(r.resumedParts * 5 * MiB)
    expect(progress.at(-1)).toMatchObject({ phase: 'done', sent: data.length, total: data.length })
    expect(store.m.size).toBe(0)
    expect(r.asset.size).toBe(data.length)
    expect(sha(await download(ann.api, project, r.asset.id))).toBe(sha(data))
  })

  it('a model becomes levels: notified over collab, its manifest drives LOD selection', async () => {
    const client = collab(ann.token)
    await client.connect()
    const notes: { event?: string; asset?: string; levels?: number }[] = []
    client.on('notify', (n) => notes.push(n as never))
    const n = 40
    let obj = ''
    for (let y = 0; y <= n; y++) for (let x = 0; x <= n; x++) obj += `v ${x} ${y} ${((x * 7919 + y * 104729) % 1000) / 1000}\n`
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const a = y * (n + 1) + x + 1
        obj += `f ${a} ${a + n + 1} ${a + 1}\nf ${a + 1} ${a + n + 1} ${a + n + 2}\n`
      }
    }
    const r = await new Uploader(ann.api, memoryStore()).upload(file(new TextEncoder().encode(obj), 'grid.obj', 'model/obj'), { project })
    await until(() => notes.some((x) => x.asset === r.asset.id && x.event === 'ready'), (w) => client.on('notify', w), 'the asset ready', 120_000)
    client.close()
    const m = await ann.api.getManifest(project, r.asset.id)
    expect(m.levels.length).toBeGreaterThan(1)
    const levels = m.levels.map((l) => ({ geometricError: l.error, bytes: l.bytes }))
    const sphere = m.bounds.sphere
    // From distance d above the sphere (0: inside it, where the distance is `near`).
    const at = (d: number) =>
      selectLevels(
        { position: [sphere.center[0]!, sphere.center[1]!, sphere.center[2]! + (d ? sphere.radius + d : 0)], direction: [0, 0, -1], fovy: Math.PI / 3, viewportWidth: 1920, viewportHeight: 1080, near: 0.001 },
        [{ center: sphere.center as [number, number, number], radius: sphere.radius, levels }],
      ).level[0]!
    expect(at(0)).toBe(0) // inside: the finest
    expect(at(1e6)).toBe(levels.length - 1) // far: the coarsest
    const picks = [1, 10, 100, 1000, 10000].map(at)
    expect([...picks].sort((x, y) => x - y)).toEqual(picks) // coarser with distance
    const res = await fetch(m.levels[0]!.url!)
    expect(res.status).toBe(200)
    expect(new Uint8Array(await res.arrayBuffer()).slice(0, 4)).toEqual(new TextEncoder().encode('glTF'))
  })
})
