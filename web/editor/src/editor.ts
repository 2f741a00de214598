// The scene editor: the scene tree, the three.js viewport, the content browser and the
// stats overlay, on one room of the SDK's collaboration client. Dragging an object sends
// its position on the ephemeral lane (others see it move) and one durable `set` on release;
// other users' cursors and selections show with their names; Ctrl+Z undoes one's own edits
// (the undo batches survive reconnects: they name entities, not connections).
import { CollabClient, OpError, type Room, type SceneOp } from '@kiln/sdk'
import * as THREE from 'three'
import { ASSET_MIME, ContentBrowser } from './content.js'
import { formatBytes, h, userColor } from './dom.js'
import type { Session } from './session.js'
import { Streamer } from './streaming.js'
import { TerminalPanel } from './terminal.js'
import { type Vec3, Viewport } from './viewport.js'

const round = (v: THREE.Vector3): Vec3 => [+v.x.toFixed(3), +v.y.toFixed(3), +v.z.toFixed(3)]
const LIMIT = 1e6 // world units: positions from others beyond this are ignored
// [x, y, z] of finite numbers within LIMIT, or null (others' eph data is not trusted).
function finite3(v: unknown): Vec3 | null {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && Math.abs(x) <= LIMIT)
    ? (v as Vec3)
    : null
}
const newId = () => `e${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

export function editorView(s: Session, project: string, scene: string): HTMLElement {
  const roomName = `${project}/${scene}`
  const status = h('span', { class: 'status', id: 'connection' }, 'connecting')
  const message = h('span', { class: 'message', id: 'message' })
  const tree = h('ul', { class: 'tree', id: 'tree' })
  const people = h('ul', { class: 'people', id: 'people' })
  const overlay = h('pre', { class: 'overlay', id: 'overlay' })
  const stage = h('div', { class: 'stage', id: 'stage' })
  const labels = h('div', { class: 'labels' })
  stage.append(labels)
  const say = (text: string) => {
    message.textContent = text
  }

  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/collab`
  const client = new CollabClient({ url, token: s.token })
  const room: Room = client.join(roomName)
  const viewport = new Viewport(stage)
  const streamer = new Streamer(s.api, project, viewport)
  const content = new ContentBrowser(s.api, project)
  const terminal = new TerminalPanel(s.api, s.token)
  const undo: SceneOp[][] = []
  let selected: string | null = null
  let dragging: { id: string; y: number; moved: boolean } | null = null

  client.on('state', (e) => {
    status.textContent = e.state === 'waiting' ? `reconnecting in ${e.retryInMs} ms` : e.state
    status.dataset.state = e.state
  })
  client.on('notify', (n) => {
    const a = n as { kind: string; event?: string; asset?: string; stage?: string; percent?: number; code?: string }
    if (a.kind !== 'asset' || !a.asset) return
    if (a.event === 'progress') content.setState(a.asset, `${a.stage} ${a.percent}%`)
    if (a.event === 'ready') {
      content.setState(a.asset, 'ready')
      streamer.assetReady(a.asset)
    }
    if (a.event === 'failed') content.setState(a.asset, `failed: ${a.code}`)
  })
  room.on('left', (e) => say(`Left the scene: ${e.reason}`))
  room.ready.catch((e: OpError) => say(`Cannot open ${roomName}: ${e.message}`))

  // Edits: applied at once, undo batch kept; a refusal (nack) rolls back and says why.
  function edit(ops: SceneOp[], record = true): void {
    try {
      const r = room.apply(ops)
      if (record) undo.push(r.undo)
      r.seq.catch((e: OpError) => {
        // Rolled back: there is nothing to undo.
        const at = undo.lastIndexOf(r.undo)
        if (at >= 0) undo.splice(at, 1)
        say(`Refused (${e.code}): ${e.message}`)
      })
    } catch (e) {
      say(e instanceof OpError ? `Cannot apply: ${e.message}` : String(e))
    }
  }
  function undoLast(): void {
    const ops = undo.pop()
    if (ops) edit(ops, false)
  }
  function select(id: string | null): void {
    selected = id
    viewport.select(id)
    room.eph('selection', { ids: id ? [id] : [] })
    renderTree()
  }

  // Scene tree, re-rendered on the next frame after a change.
  let treeQueued = false
  function renderTree(): void {
    if (treeQueued) return
    treeQueued = true
    requestAnimationFrame(() => {
      treeQueued = false
      const levels = streamer.levels()
      const node = (id: string): HTMLElement => {
        const e = room.scene.get(id)!
        const kids = room.scene.children(id)
        const label = typeof e.props.name === 'string' ? e.props.name : id
        const lod = (levels[id] ?? -1) >= 0 ? ` · L${levels[id]}` : ''
        return h(
          'li',
          { 'data-entity': id, class: id === selected ? 'selected' : '' },
          h('span', { onclick: () => select(id) }, `${label}${lod}`),
          kids.length ? h('ul', {}, ...kids.map(node)) : null,
        )
      }
      tree.replaceChildren(...room.scene.children('root').map(node))
    })
  }
  streamer.onLevels = renderTree
  room.on('change', (c) => {
    if (c.source !== 'local') for (const id of c.entities) viewport.overrides.delete(id)
    viewport.sync(room.scene, c.source === 'reset' ? 'all' : c.entities)
    streamer.update(room.scene)
    if (selected && !room.scene.has(selected)) select(null)
    renderTree()
  })

  // Other users: presence list, cursors and selections with names, drags as they happen.
  const cursors = new Map<string, { marker: THREE.Mesh; label: HTMLElement; selection: THREE.BoxHelper | null }>()
  function renderPeople(): void {
    people.replaceChildren(
      h('li', { style: { color: userColor(s.user.id) } }, `${s.user.name} (you)`),
      ...[...room.members.values()].map((m) => h('li', { style: { color: userColor(m.user) }, 'data-session': m.session }, m.name)),
    )
    for (const [session, c] of cursors) {
      if (room.members.has(session)) continue
      c.marker.removeFromParent()
      c.label.remove()
      c.selection?.removeFromParent()
      cursors.delete(session)
    }
  }
  room.on('presence', renderPeople)
  // Others' drags: shown while their updates keep coming (a drag whose end never arrives,
  // a closed tab, stops showing after DRAG_STALE_MS or when its member leaves).
  const DRAG_STALE_MS = 3000
  const drags = new Map<string, { session: string; at: number }>() // entity -> who, when
  const endDrag = (entity: string) => {
    drags.delete(entity)
    viewport.overrides.delete(entity)
    viewport.sync(room.scene, [entity])
  }
  room.on('eph', (batch) => {
    for (const e of batch) {
      const d = e.data as Record<string, unknown>
      if (e.kind !== 'drag' || typeof d.entity !== 'string' || !room.scene.has(d.entity)) continue
      const p = finite3(d.position)
      if (p) {
        drags.set(d.entity, { session: e.session, at: performance.now() })
        viewport.overrides.set(d.entity, p)
        viewport.sync(room.scene, [d.entity])
      } else if (drags.get(d.entity)?.session === e.session) endDrag(d.entity)
    }
  })
  room.on('presence', () => {
    for (const [entity, d] of drags) if (!room.members.has(d.session)) endDrag(entity)
  })
  setInterval(() => {
    const now = performance.now()
    for (const [entity, d] of drags) if (now - d.at > DRAG_STALE_MS) endDrag(entity)
  }, 500)
  viewport.onFrame(() => {
    for (const m of room.members.values()) {
      let c = cursors.get(m.session)
      if (!c) {
        const marker = new THREE.Mesh(new THREE.SphereGeometry(0.12), new THREE.MeshBasicMaterial({ color: userColor(m.user) }))
        viewport.scene.add(marker)
        const label = h('div', { class: 'cursor-label', 'data-user': m.user, style: { borderColor: userColor(m.user) } }, m.name)
        labels.append(label)
        c = { marker, label, selection: null }
        cursors.set(m.session, c)
      }
      const c3 = m.eph.cursor as { x?: unknown; y?: unknown; z?: unknown } | undefined
      const p = c3 ? finite3([c3.x, c3.y, c3.z]) : null
      const at = p ? new THREE.Vector3(...p) : null
      c.marker.visible = Boolean(at)
      const screen = at ? viewport.project(at) : null
      if (at) c.marker.position.copy(at)
      const rect = stage.getBoundingClientRect()
      c.label.style.display = screen ? 'block' : 'none'
      if (screen) c.label.style.transform = `translate(${screen.x - rect.left + 8}px, ${screen.y - rect.top - 8}px)`
      const ids = (m.eph.selection as { ids?: unknown } | undefined)?.ids
      const sel = Array.isArray(ids) && typeof ids[0] === 'string' ? ids[0] : undefined
      const g = sel ? viewport.objects.get(sel) : undefined
      if (c.selection && (!g || c.selection.userData.entity !== sel)) {
        c.selection.removeFromParent()
        c.selection = null
      }
      if (g && !c.selection) {
        c.selection = new THREE.BoxHelper(g, new THREE.Color(userColor(m.user)))
        c.selection.userData.entity = sel
        viewport.scene.add(c.selection)
      }
      c.selection?.update()
    }
    const st = streamer.stats()
    overlay.textContent =
      `entities with assets ${st.entities}\n` +
      `levels shown ${st.shown.map((n, i) => `L${i}:${n}`).join(' ') || '-'}  none:${st.none}\n` +
      `bytes loaded ${formatBytes(st.bytesLoaded)} of ${formatBytes(st.budgetBytes)}${st.overBudget ? ' (over budget)' : ''}\n` +
      `downloads ${st.downloads}  seq ${room.replica.seq}  pending ${room.replica.pendingBatches.length}`
  })

  // Pointer: pick and drag on the ground plane through the object's height; cursor otherwise.
  const canvas = viewport.renderer.domElement
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return
    const id = viewport.pick(e.clientX, e.clientY)
    select(id)
    if (!id) return
    const g = viewport.objects.get(id)!
    dragging = { id, y: g.getWorldPosition(new THREE.Vector3()).y, moved: false }
    viewport.controls.enabled = false
    canvas.setPointerCapture(e.pointerId)
  })
  canvas.addEventListener('pointermove', (e) => {
    const ground = viewport.groundPoint(e.clientX, e.clientY, dragging?.y ?? 0)
    if (!dragging) {
      if (ground) room.eph('cursor', { x: +ground.x.toFixed(3), y: +ground.y.toFixed(3), z: +ground.z.toFixed(3) })
      return
    }
    if (!ground) return
    const g = viewport.objects.get(dragging.id)
    if (!g?.parent) return
    const local = round(g.parent.worldToLocal(ground.clone()))
    dragging.moved = true
    viewport.overrides.set(dragging.id, local)
    viewport.sync(room.scene, [dragging.id])
    room.eph('drag', { entity: dragging.id, position: local })
    room.eph('cursor', { x: +ground.x.toFixed(3), y: +ground.y.toFixed(3), z: +ground.z.toFixed(3) })
  })
  const release = (e: PointerEvent) => {
    if (!dragging) return
    const d = dragging
    dragging = null
    viewport.controls.enabled = true
    if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId)
    const p = viewport.overrides.get(d.id)
    room.eph('drag', { entity: d.id })
    if (d.moved && p) edit([{ op: 'set', entity: d.id, key: 'position', value: p }])
    viewport.overrides.delete(d.id)
    viewport.sync(room.scene, [d.id])
  }
  // A drag held still is still a drag: say so every second (others drop drags that go quiet).
  setInterval(() => {
    const p = dragging ? viewport.overrides.get(dragging.id) : undefined
    if (dragging && p) room.eph('drag', { entity: dragging.id, position: p })
  }, 1000)
  canvas.addEventListener('pointerup', release)
  canvas.addEventListener('pointercancel', release)

  // Assets dragged from the content browser are placed where they are dropped.
  stage.addEventListener('dragover', (e) => {
    if (e.dataTransfer?.types.includes(ASSET_MIME)) e.preventDefault()
  })
  stage.addEventListener('drop', (e) => {
    const asset = e.dataTransfer?.getData(ASSET_MIME)
    if (!asset) return
    e.preventDefault()
    const p = viewport.groundPoint(e.clientX, e.clientY) ?? new THREE.Vector3()
    edit([{ op: 'create', entity: newId(), parent: 'root', props: { name: e.dataTransfer?.getData('text/plain') || asset, asset, position: round(p) } }])
  })

  const addCube = () => {
    const p: Vec3 = [+(Math.random() * 8 - 4).toFixed(2), 0.5, +(Math.random() * 8 - 4).toFixed(2)]
    const id = newId()
    edit([{ op: 'create', entity: id, parent: 'root', props: { name: `cube ${id.slice(-4)}`, position: p, color: `hsl(${Math.floor(Math.random() * 360)}, 60%, 60%)` } }])
    select(id)
  }
  const remove = () => {
    if (selected) edit([{ op: 'delete', entity: selected }])
  }
  const keys = (e: KeyboardEvent) => {
    if ((e.target as HTMLElement).closest('input, textarea')) return
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') {
      e.preventDefault()
      undoLast()
    } else if (e.key === 'Delete' || e.key === 'Backspace') remove()
  }
  window.addEventListener('keydown', keys)

  void client.connect().catch((e: Error) => say(`Cannot connect: ${e.message}`))

  // What the browser tests read (tests/e2e/editor): state, not pixels.
  ;(window as unknown as Record<string, unknown>).kilnEditor = {
    client,
    room,
    viewport,
    streamer,
    content,
    terminal,
    select,
    undo: undoLast,
    addCube,
    screenOf: (id: string) => viewport.screenOf(id),
    position: (id: string) => {
      const g = viewport.objects.get(id)
      return g ? round(g.position) : null
    },
  }

  return h(
    'div',
    { class: 'editor' },
    h(
      'header',
      {},
      h('a', { href: '#/', class: 'home' }, 'Kiln'),
      h('span', { class: 'scene-name' }, roomName),
      h('button', { onclick: addCube, id: 'add-cube' }, 'Add cube'),
      h('button', { onclick: remove, id: 'delete' }, 'Delete'),
      h('button', { onclick: undoLast, id: 'undo' }, 'Undo'),
      h('button', { onclick: () => void terminal.toggle(), id: 'terminal-toggle' }, 'Terminal'),
      status,
      message,
    ),
    h('aside', { class: 'side' }, h('h3', {}, 'Scene'), tree, h('h3', {}, 'People'), people),
    h('main', { class: 'view' }, stage, overlay, terminal.element),
    content.element,
  )
}
