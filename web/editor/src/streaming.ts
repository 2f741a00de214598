// Streams the levels of the assets entities show: four times a second the SDK's LOD
// selection (Cesium's screen-space error, the same rule as the server's library) picks a
// level per entity from the camera and the memory budget, and the missing ones download in
// its order, two at a time. Levels are shared between entities of one asset and freed when
// no entity shows them. stats() feeds the overlay.
import { ApiError, type KilnApi, type SceneState, type SelectEntity, type components, selectLevels } from '@kiln/sdk'
import * as THREE from 'three'
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js'
import type { Viewport } from './viewport.js'

type Manifest = components['schemas']['Manifest']

interface Shown {
  asset: string
  loaded: number // level index shown, -1 none
  loading: number // level index being fetched, -1 none
  object: THREE.Object3D | null
}

interface CachedLevel {
  scene: Promise<THREE.Group>
  bytes: number
  refs: number
  ready: boolean
}

export interface StreamStats {
  entities: number
  /** Entities showing each level index (0 finest). */
  shown: number[]
  /** Entities showing nothing yet (or left out by the budget). */
  none: number
  /** Bytes of the levels held (each level once, however many entities show it). */
  bytesLoaded: number
  budgetBytes: number
  overBudget: boolean
  downloads: number
}

export class Streamer {
  budgetBytes = 256 * 1024 * 1024
  maxScreenSpaceError = 16
  private manifests = new Map<string, Manifest | 'loading' | 'missing'>()
  private shown = new Map<string, Shown>()
  private cache = new Map<string, CachedLevel>()
  private inFlight = 0
  private downloads = 0
  private last: ReturnType<typeof selectLevels> | null = null
  private readonly loader = new GLTFLoader()
  /** Called when some entity starts showing another level. */
  onLevels: () => void = () => {}

  constructor(
    private readonly api: KilnApi,
    private readonly project: string,
    private readonly viewport: Viewport,
  ) {
    setInterval(() => this.tick(), 250)
  }

  /** Entities that show assets, after a scene change. */
  update(view: SceneState): void {
    for (const [id, s] of this.shown) {
      const asset = view.get(id)?.props.asset
      if (asset !== s.asset) this.drop(id, s)
    }
    for (const id of view.ids()) {
      const asset = view.get(id)!.props.asset
      if (typeof asset !== 'string' || this.shown.has(id)) continue
      this.shown.set(id, { asset, loaded: -1, loading: -1, object: null })
      this.manifest(asset)
    }
  }

  /** The pipeline finished an asset (a notification): read its manifest again. */
  assetReady(asset: string): void {
    if (this.manifests.get(asset) !== 'loading') this.manifests.delete(asset)
    this.manifest(asset)
  }

  private manifest(asset: string): void {
    if (this.manifests.has(asset)) return
    this.manifests.set(asset, 'loading')
    this.api.getManifest(this.project, asset).then(
      (m) => this.manifests.set(asset, m),
      (e) => this.manifests.set(asset, e instanceof ApiError ? 'missing' : 'missing'),
    )
  }

  stats(): StreamStats {
    const shown: number[] = []
    let none = 0
    for (const s of this.shown.values()) {
      if (s.loaded < 0) none++
      else shown[s.loaded] = (shown[s.loaded] ?? 0) + 1
    }
    let bytes = 0
    for (const c of this.cache.values()) if (c.ready) bytes += c.bytes
    return {
      entities: this.shown.size,
      shown: Array.from(shown, (x) => x ?? 0),
      none,
      bytesLoaded: bytes,
      budgetBytes: this.budgetBytes,
      overBudget: this.last?.overBudget ?? false,
      downloads: this.downloads,
    }
  }

  /** Level shown per entity id (-1 none), for tests and the tree. */
  levels(): Record<string, number> {
    return Object.fromEntries([...this.shown].map(([id, s]) => [id, s.loaded]))
  }

  private tick(): void {
    const ids: string[] = []
    const entities: SelectEntity[] = []
    const cam = this.viewport.camera
    for (const [id, s] of this.shown) {
      const m = this.manifests.get(s.asset)
      const g = this.viewport.objects.get(id)
      if (!g || typeof m !== 'object' || !m.levels.length) continue
      g.updateWorldMatrix(true, false)
      const c = m.bounds.sphere.center
      const center = g.localToWorld(new THREE.Vector3(c[0] ?? 0, c[1] ?? 0, c[2] ?? 0))
      const scale = g.getWorldScale(new THREE.Vector3())
      const k = Math.max(Math.abs(scale.x), Math.abs(scale.y), Math.abs(scale.z))
      ids.push(id)
      entities.push({
        center: [center.x, center.y, center.z],
        radius: m.bounds.sphere.radius * k,
        scale: k,
        levels: m.levels.map((l) => ({ geometricError: l.error, bytes: l.bytes })),
        loaded: s.loaded,
      })
    }
    const dir = cam.getWorldDirection(new THREE.Vector3())
    const size = this.viewport.renderer.getSize(new THREE.Vector2())
    const sel = selectLevels(
      {
        position: [cam.position.x, cam.position.y, cam.position.z],
        direction: [dir.x, dir.y, dir.z],
        fovy: THREE.MathUtils.degToRad(cam.fov),
        viewportWidth: size.x,
        viewportHeight: size.y,
        near: cam.near,
      },
      entities,
      { maxScreenSpaceError: this.maxScreenSpaceError, hysteresis: 0.2, memoryBudgetBytes: this.budgetBytes },
    )
    this.last = sel
    ids.forEach((id, i) => {
      if (sel.level[i] === -1) this.show(id, this.shown.get(id)!, -1)
    })
    for (const i of sel.order) {
      if (this.inFlight >= 2) break
      const id = ids[i]!
      const s = this.shown.get(id)!
      const want = sel.level[i]!
      if (want < 0 || s.loading === want || s.loaded === want) continue
      this.load(id, s, want)
    }
  }

  private load(id: string, s: Shown, level: number): void {
    const m = this.manifests.get(s.asset)
    if (typeof m !== 'object') return
    const key = `${s.asset}:${level}`
    let c = this.cache.get(key)
    if (!c) {
      const l = m.levels[level]!
      this.downloads++
      const entry: CachedLevel = { scene: this.loader.loadAsync(l.url).then((g) => g.scene), bytes: l.bytes, refs: 0, ready: false }
      entry.scene.then(() => (entry.ready = true), () => this.cache.delete(key))
      this.cache.set(key, entry)
      c = entry
    }
    s.loading = level
    this.inFlight++
    c.scene.then(
      (scene) => {
        if (this.shown.get(id) === s && s.loading === level) this.show(id, s, level, scene)
      },
      (e) => console.warn(`level ${level} of ${s.asset}: ${(e as Error).message}`),
    ).finally(() => {
      this.inFlight--
      if (s.loading === level) s.loading = -1
    })
  }

  private show(id: string, s: Shown, level: number, scene?: THREE.Group): void {
    if (s.loaded === level) return
    if (s.object) s.object.removeFromParent()
    this.release(s)
    s.object = null
    s.loaded = -1
    if (level >= 0 && scene) {
      const g = this.viewport.objects.get(id)
      if (!g) return
      s.object = scene.clone()
      s.object.name = 'asset'
      g.add(s.object)
      s.loaded = level
      this.cache.get(`${s.asset}:${level}`)!.refs++
    }
    this.onLevels()
  }

  private release(s: Shown): void {
    if (s.loaded < 0) return
    const key = `${s.asset}:${s.loaded}`
    const c = this.cache.get(key)
    if (c && --c.refs <= 0) {
      this.cache.delete(key)
      c.scene.then((g) =>
        g.traverse((o) => {
          const mesh = o as THREE.Mesh
          mesh.geometry?.dispose()
          const mats = Array.isArray(mesh.material) ? mesh.material : mesh.material ? [mesh.material] : []
          for (const mat of mats) {
            for (const v of Object.values(mat)) if (v instanceof THREE.Texture) v.dispose()
            mat.dispose()
          }
        }),
      )
    }
  }

  private drop(id: string, s: Shown): void {
    if (s.object) s.object.removeFromParent()
    this.release(s)
    this.shown.delete(id)
  }
}
