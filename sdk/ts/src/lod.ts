// LOD selection: which level of each entity's asset to show and in what order to download.
// The TypeScript mirror of src/assets/pipeline/lod_selection.hpp (the rule and its reasons
// are written there and in docs/assets.md, "Streaming a scene"); both are checked on the
// same vectors, tests/fixtures/lod_selection/cases.json.
//
// Cesium 3D Tiles' screen-space error (3D Tiles 1.1, "Geometric error"):
//   sse = geometric_error * viewport_height / (distance * 2 * tan(fovy / 2))   [px]
// with `distance` from the camera to the bounding sphere's nearest point (at least `near`).

export type Vec3 = readonly [number, number, number]

export interface Camera {
  position: Vec3
  /** Where it looks; need not be unit length; zero: no culling. */
  direction: Vec3
  /** Vertical field of view, radians. */
  fovy: number
  /** px */
  viewportWidth: number
  /** px */
  viewportHeight: number
  /** Model units: the least distance the rule uses. */
  near: number
}

/** One level as the manifest describes it: geometric error (model units) and bytes. */
export interface Level {
  geometricError: number
  bytes: number
}

export interface SelectEntity {
  /** World-space bounding sphere. */
  center: Vec3
  radius: number
  /** Multiplies the levels' error (the entity's largest scale factor). Default 1. */
  scale?: number
  /** Finest first; empty: skipped (-1). */
  levels: readonly Level[]
  /** The level held now; -1 or absent: none. */
  loaded?: number
}

export interface SelectOptions {
  /** px; Cesium's default 16. */
  maxScreenSpaceError: number
  /** Fraction of the threshold, [0, 1). */
  hysteresis: number
  memoryBudgetBytes: number
}

export const defaultSelectOptions: SelectOptions = {
  maxScreenSpaceError: 16,
  hysteresis: 0.2,
  memoryBudgetBytes: 512 * 1024 * 1024,
}

export interface Selection {
  /** Per entity: the index into its levels, -1 none. */
  level: number[]
  /** Entity indices to download, first first. */
  order: number[]
  /** The selected levels' bytes. */
  bytes: number
  /** The budget made some entity coarser than its error asks. */
  overBudget: boolean
}

function pixelsPerUnit(c: Camera): number {
  const t = Math.tan(c.fovy / 2)
  if (!(t > 0) || !Number.isFinite(t) || !(c.viewportHeight > 0)) return 0
  return c.viewportHeight / (2 * t)
}

/** Screen-space error in px of `geometricError` (world units) seen at `distance`. */
export function screenSpaceError(camera: Camera, geometricError: number, distance: number): number {
  const d = Math.max(distance, camera.near > 0 ? camera.near : 1e-9)
  const e = (geometricError * pixelsPerUnit(camera)) / d
  return Number.isFinite(e) ? e : 0
}

function coarsestWithin(levels: readonly Level[], scale: number, k: number, distance: number, threshold: number): number {
  const limit = (threshold * distance) / (scale * k)
  for (let j = levels.length - 1; j > 0; --j) if (levels[j]!.geometricError <= limit) return j
  return 0
}

function inCone(v: Vec3, len: number, r: number, dir: Vec3, ca: number, sa: number): boolean {
  if (len <= r) return true
  const along = v[0] * dir[0] + v[1] * dir[1] + v[2] * dir[2]
  const perp = Math.sqrt(Math.max(0, len * len - along * along))
  if (along * ca + perp * sa < 0) return false
  return perp * ca - along * sa <= r
}

interface Rank {
  px: number // float32-rounded
  index: number
  tier: number
}
const byRank = (a: Rank, b: Rank) => a.tier - b.tier || b.px - a.px || a.index - b.index

export function selectLevels(camera: Camera, entities: readonly SelectEntity[], options: SelectOptions = defaultSelectOptions): Selection {
  const n = entities.length
  const out: Selection = { level: new Array<number>(n).fill(-1), order: [], bytes: 0, overBudget: false }
  const distance = new Float64Array(n).fill(Infinity)
  const inView = new Uint8Array(n)
  const k = pixelsPerUnit(camera)
  const near = camera.near > 0 ? camera.near : 1e-9
  const max = options.maxScreenSpaceError
  const h = Math.min(Math.max(options.hysteresis, 0), 0.99)

  const d = camera.direction
  const dlen = Math.hypot(d[0], d[1], d[2])
  const cull = dlen > 0 && Number.isFinite(dlen) && camera.viewportHeight > 0
  const dir: Vec3 = cull ? [d[0] / dlen, d[1] / dlen, d[2] / dlen] : [0, 0, 0]
  const aspect = cull ? camera.viewportWidth / camera.viewportHeight : 1
  const half = Math.atan(Math.tan(camera.fovy / 2) * Math.sqrt(1 + aspect * aspect))
  const ca = Math.cos(half)
  const sa = Math.sin(half)
  const scaleOf = (e: SelectEntity) => (e.scale !== undefined && Number.isFinite(e.scale) && e.scale > 0 ? e.scale : 1)

  let wanted = 0
  let base = 0
  entities.forEach((e, i) => {
    if (e.levels.length === 0) return
    const coarse = e.levels.length - 1
    const v: Vec3 = [e.center[0] - camera.position[0], e.center[1] - camera.position[1], e.center[2] - camera.position[2]]
    const len = Math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    const r = Math.max(0, e.radius)
    const scale = scaleOf(e)
    let dist = len - r
    let view = true
    if (!Number.isFinite(len) || !Number.isFinite(r)) {
      dist = Infinity
      view = false
    } else if (cull) {
      view = inCone(v, len, r, dir, ca, sa)
    }
    dist = Math.max(dist, near)
    inView[i] = view ? 1 : 0
    distance[i] = dist
    let pick = coarse
    if (view) {
      const loaded = e.loaded !== undefined && e.loaded >= 0 && e.loaded <= coarse ? e.loaded : -1
      if (loaded < 0) {
        pick = coarsestWithin(e.levels, scale, k, dist, max)
      } else {
        const now = (e.levels[loaded]!.geometricError * scale * k) / dist
        if (now > max * (1 + h)) pick = coarsestWithin(e.levels, scale, k, dist, max)
        else if (now >= max * (1 - h)) pick = loaded
        else pick = Math.max(loaded, coarsestWithin(e.levels, scale, k, dist, max * (1 - h)))
      }
    }
    out.level[i] = pick
    wanted += e.levels[pick]!.bytes
    base += e.levels[coarse]!.bytes
  })

  const pxOf = (i: number, level: number) => {
    const e = entities[i]!
    const px = (e.levels[level]!.geometricError * scaleOf(e) * k) / distance[i]!
    return Number.isFinite(px) ? px : 0
  }

  if (wanted > options.memoryBudgetBytes) {
    out.overBudget = true
    const ranks: Rank[] = []
    entities.forEach((e, i) => {
      if (e.levels.length) ranks.push({ px: Math.fround(pxOf(i, e.levels.length - 1)), index: i, tier: inView[i] ? 0 : 1 })
    })
    ranks.sort(byRank)
    if (base > options.memoryBudgetBytes) {
      let used = 0
      for (const rk of ranks) {
        const e = entities[rk.index]!
        const b = e.levels[e.levels.length - 1]!.bytes
        if (used + b <= options.memoryBudgetBytes) {
          used += b
          out.level[rk.index] = e.levels.length - 1
        } else {
          out.level[rk.index] = -1
        }
      }
    } else {
      let left = options.memoryBudgetBytes - base
      for (const rk of ranks) {
        const e = entities[rk.index]!
        const coarse = e.levels.length - 1
        const cb = e.levels[coarse]!.bytes
        let j = out.level[rk.index]!
        while (j < coarse && e.levels[j]!.bytes > cb && e.levels[j]!.bytes - cb > left) ++j
        if (e.levels[j]!.bytes > cb) left -= e.levels[j]!.bytes - cb
        out.level[rk.index] = j
      }
    }
  }

  const ranks: Rank[] = []
  entities.forEach((e, i) => {
    const sel = out.level[i]!
    if (sel < 0) return
    out.bytes += e.levels[sel]!.bytes
    if (sel === e.loaded) return
    const coarse = e.levels.length - 1
    const has = e.loaded !== undefined && e.loaded >= 0 && e.loaded <= coarse
    const tier = (inView[i] ? 0 : 2) + (has ? 1 : 0)
    ranks.push({ px: Math.fround(pxOf(i, has ? e.loaded! : coarse)), index: i, tier })
  })
  ranks.sort(byRank)
  out.order = ranks.map((r) => r.index)
  return out
}
