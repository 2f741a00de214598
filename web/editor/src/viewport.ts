// The three.js view of a scene: one Group per entity, nested as the scene tree is, placed by
// its `position`, `rotation` (quaternion x, y, z, w) and `scale` props (docs/protocol.md,
// "Entities that show assets"). An entity without `asset` shows a box (`color` prop); one
// with an asset shows what the streamer loaded for it. Picking, ground points and screen
// positions for the editor's pointer handling.
import type { SceneState } from '@kiln/sdk'
import * as THREE from 'three'
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js'

export type Vec3 = [number, number, number]

function vec3(v: unknown): Vec3 | null {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x)) ? (v as Vec3) : null
}

export class Viewport {
  readonly renderer: THREE.WebGLRenderer
  readonly scene = new THREE.Scene()
  readonly camera: THREE.PerspectiveCamera
  readonly controls: OrbitControls
  readonly root = new THREE.Group()
  readonly objects = new Map<string, THREE.Group>()
  /** Positions shown instead of the entity's own while another user drags it. */
  readonly overrides = new Map<string, Vec3>()
  private readonly raycaster = new THREE.Raycaster()
  private readonly boxGeometry = new THREE.BoxGeometry(1, 1, 1)
  private readonly frameHooks: (() => void)[] = []
  private selectionBox: THREE.BoxHelper | null = null

  constructor(readonly container: HTMLElement) {
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true })
    this.renderer.setPixelRatio(Math.min(2, window.devicePixelRatio))
    container.append(this.renderer.domElement)
    this.camera = new THREE.PerspectiveCamera(60, 1, 0.1, 100_000)
    this.camera.position.set(8, 6, 10)
    this.controls = new OrbitControls(this.camera, this.renderer.domElement)
    this.controls.target.set(0, 0, 0)
    this.controls.update()
    this.scene.background = new THREE.Color(0x1d2127)
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x445566, 2.2))
    const sun = new THREE.DirectionalLight(0xffffff, 1.5)
    sun.position.set(5, 10, 7)
    this.scene.add(sun)
    this.scene.add(new THREE.GridHelper(100, 100, 0x556070, 0x333a44))
    this.scene.add(this.root)
    new ResizeObserver(() => this.resize()).observe(container)
    this.resize()
    this.renderer.setAnimationLoop(() => {
      this.controls.update()
      for (const f of this.frameHooks) f()
      this.selectionBox?.update()
      this.renderer.render(this.scene, this.camera)
    })
  }

  onFrame(f: () => void): void {
    this.frameHooks.push(f)
  }

  private resize(): void {
    const w = Math.max(1, this.container.clientWidth)
    const h = Math.max(1, this.container.clientHeight)
    this.renderer.setSize(w, h, false)
    this.camera.aspect = w / h
    this.camera.updateProjectionMatrix()
  }

  /** Brings the groups of `ids` (or every entity) in line with the scene. */
  sync(view: SceneState, ids: Iterable<string> | 'all'): void {
    const todo = ids === 'all' ? new Set([...view.ids(), ...this.objects.keys()]) : new Set(ids)
    todo.delete('root')
    for (const id of todo) {
      const e = view.get(id)
      if (!e) {
        const g = this.objects.get(id)
        if (g) {
          // Children of a deleted entity are deleted with it (their own ids are in `todo`).
          g.removeFromParent()
          this.objects.delete(id)
        }
        continue
      }
      this.group(id)
    }
    for (const id of todo) {
      const e = view.get(id)
      if (!e) continue
      const g = this.group(id)
      const parent = e.parent === 'root' ? this.root : this.group(e.parent)
      if (g.parent !== parent) parent.add(g)
      this.place(id, g, e.props as Record<string, unknown>)
      const box = g.getObjectByName('box') as THREE.Mesh | undefined
      if (typeof e.props.asset === 'string') {
        if (box) box.removeFromParent()
      } else {
        const mesh = box ?? this.box(g)
        const color = typeof e.props.color === 'string' ? e.props.color : '#9aa7b8'
        ;(mesh.material as THREE.MeshStandardMaterial).color.set(color)
      }
    }
  }

  private group(id: string): THREE.Group {
    let g = this.objects.get(id)
    if (!g) {
      g = new THREE.Group()
      g.userData.entity = id
      g.name = id
      this.objects.set(id, g)
      this.root.add(g)
    }
    return g
  }

  private box(g: THREE.Group): THREE.Mesh {
    const m = new THREE.Mesh(this.boxGeometry, new THREE.MeshStandardMaterial({ color: 0x9aa7b8 }))
    m.name = 'box'
    g.add(m)
    return m
  }

  /** T * R * S from the props; what is not of its shape is left at its default. */
  place(id: string, g: THREE.Object3D, props: Record<string, unknown>): void {
    const p = this.overrides.get(id) ?? vec3(props.position) ?? [0, 0, 0]
    g.position.set(p[0], p[1], p[2])
    const r = props.rotation
    if (Array.isArray(r) && r.length === 4 && r.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      g.quaternion.set(r[0], r[1], r[2], r[3]).normalize()
    } else g.quaternion.identity()
    const s = props.scale
    if (typeof s === 'number' && Number.isFinite(s)) g.scale.setScalar(s)
    else if (vec3(s)) g.scale.set(...(s as Vec3))
    else g.scale.setScalar(1)
  }

  /** The entity under a client point, or null. */
  pick(clientX: number, clientY: number): string | null {
    this.ray(clientX, clientY)
    for (const hit of this.raycaster.intersectObject(this.root, true)) {
      let o: THREE.Object3D | null = hit.object
      while (o && o.userData.entity === undefined) o = o.parent
      if (o) return o.userData.entity as string
    }
    return null
  }

  /** Where a client point meets the horizontal plane at height y, or null. */
  groundPoint(clientX: number, clientY: number, y = 0): THREE.Vector3 | null {
    this.ray(clientX, clientY)
    const out = new THREE.Vector3()
    return this.raycaster.ray.intersectPlane(new THREE.Plane(new THREE.Vector3(0, 1, 0), -y), out)
  }

  /** Where an entity's origin shows on screen (client coordinates), or null when behind the camera. */
  screenOf(id: string): { x: number; y: number } | null {
    const g = this.objects.get(id)
    if (!g) return null
    return this.project(g.getWorldPosition(new THREE.Vector3()))
  }

  project(world: THREE.Vector3): { x: number; y: number } | null {
    const v = world.clone().project(this.camera)
    if (v.z > 1) return null
    const r = this.renderer.domElement.getBoundingClientRect()
    return { x: r.left + ((v.x + 1) / 2) * r.width, y: r.top + ((1 - v.y) / 2) * r.height }
  }

  select(id: string | null): void {
    if (this.selectionBox) {
      this.scene.remove(this.selectionBox)
      this.selectionBox.dispose()
      this.selectionBox = null
    }
    const g = id ? this.objects.get(id) : undefined
    if (g) {
      this.selectionBox = new THREE.BoxHelper(g, 0xffcc33)
      this.scene.add(this.selectionBox)
    }
  }

  private ray(clientX: number, clientY: number): void {
    const r = this.renderer.domElement.getBoundingClientRect()
    const ndc = new THREE.Vector2(((clientX - r.left) / r.width) * 2 - 1, -((clientY - r.top) / r.height) * 2 + 1)
    this.raycaster.setFromCamera(ndc, this.camera)
  }
}
