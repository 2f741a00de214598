// The SDK's collaboration client against a real `kiln serve`: two users edit one scene,
// see each other's edits, cursors and presence; a refused edit rolls back; a killed
// connection resumes without loss. Every frame the server sent is checked against the schema.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CollabClient, Room } from '../../src/collab.js'
import type { KilnApi } from '../../src/rest.js'
import { collab, invalid, ready, sockets, unique, until, user } from './env.js'

describe.skipIf(!ready)('collaboration against kiln serve', () => {
  let ann: { token: string; api: KilnApi }
  let bob: { token: string; api: KilnApi }
  let project: string
  const clients: CollabClient[] = []

  beforeAll(async () => {
    ann = await user(unique('ann'), 'Ann')
    bob = await user(unique('bob'), 'Bob')
    project = unique('p')
    await ann.api.createProject({ id: project, name: 'SDK' })
    const bobId = (await bob.api.me()).id
    await ann.api.putMember(project, bobId, 'editor')
  })
  afterAll(() => {
    for (const c of clients) c.close()
    expect(invalid).toEqual([])
  })

  async function pair(scene: string): Promise<[Room, Room, CollabClient, CollabClient]> {
    await ann.api.createScene(project, { id: scene, name: scene })
    const a = collab(ann.token)
    const b = collab(bob.token)
    clients.push(a, b)
    await Promise.all([a.connect(), b.connect()])
    const ra = a.join(`${project}/${scene}`)
    const rb = b.join(`${project}/${scene}`)
    await Promise.all([ra.ready, rb.ready])
    return [ra, rb, a, b]
  }

  it('edits, cursors and presence reach the other user', async () => {
    const [ra, rb] = await pair('s1')
    await until(() => ra.members.size === 1, (w) => ra.on('presence', w), 'bob in ann\'s presence')
    const { seq } = ra.apply([{ op: 'create', entity: 'cube', parent: 'root', props: { position: [1, 2, 3] } }])
    expect(await seq).toBeGreaterThan(0)
    await until(() => rb.scene.has('cube'), (w) => rb.on('change', w), 'the cube at bob')
    expect(rb.scene.get('cube')!.props.position).toEqual([1, 2, 3])
    rb.eph('cursor', { x: 0.25, y: 0.75 })
    await until(() => [...ra.members.values()].some((m) => m.eph.cursor?.x === 0.25), (w) => ra.on('eph', w), 'bob\'s cursor at ann')
    const bobMember = [...ra.members.values()][0]!
    expect(bobMember.name).toBe('Bob')
    // Per-author order: 50 sets by bob arrive at ann in order, the last one wins.
    const last = Array.from({ length: 50 }, (_, i) => rb.apply([{ op: 'set', entity: 'cube', key: 'n', value: i }]).seq).at(-1)!
    await last
    await until(() => ra.scene.get('cube')!.props.n === 49, (w) => ra.on('change', w), 'the 50th set at ann')
    expect(ra.replica.seq).toBe(rb.replica.seq)
    expect(ra.scene.snapshot()).toEqual(rb.scene.snapshot())
  })

  it('a refused edit is rolled back (bob made a viewer while editing)', async () => {
    const [ra, rb, , b] = await pair('s2')
    const notes: string[] = []
    b.on('notify', (n) => notes.push(`${n.kind}:${(n as { role?: string }).role}`))
    await ra.apply([{ op: 'create', entity: 'lamp', parent: 'root' }]).seq
    await until(() => rb.scene.has('lamp'), (w) => rb.on('change', w), 'the lamp at bob')
    await ann.api.putMember(project, (await bob.api.me()).id, 'viewer')
    await until(() => notes.includes('access:viewer'), (w) => b.on('notify', w), 'the access notification')
    const edit = rb.apply([{ op: 'set', entity: 'lamp', key: 'on', value: true }])
    expect(rb.scene.get('lamp')!.props.on).toBe(true) // optimistic
    await expect(edit.seq).rejects.toMatchObject({ code: 'forbidden' })
    expect(rb.scene.get('lamp')!.props.on).toBeUndefined() // rolled back
    await ann.api.putMember(project, (await bob.api.me()).id, 'editor')
  })

  it('a killed connection resumes from (epoch, seq): nothing lost either way', async () => {
    const [ra, rb, a] = await pair('s3')
    await ra.apply([{ op: 'create', entity: 'box', parent: 'root' }]).seq
    await until(() => rb.scene.has('box'), (w) => rb.on('change', w), 'the box at bob')
    const before = sockets.length
    const joins: boolean[] = []
    ra.on('joined', (j) => joins.push(j.recovered))
    // Kill ann's socket (no close frame), then edit on both sides while she is away.
    sockets.find((s) => (a as unknown as { ws: unknown }).ws === s)!.terminate()
    const offline = ra.apply([{ op: 'set', entity: 'box', key: 'by', value: 'ann-offline' }])
    for (let i = 0; i < 5; i++) await rb.apply([{ op: 'set', entity: 'box', key: `bob${i}`, value: i }]).seq
    await offline.seq
    expect(sockets.length).toBeGreaterThan(before)
    expect(joins).toEqual([true])
    await until(() => rb.scene.get('box')!.props.by === 'ann-offline', (w) => rb.on('change', w), 'ann\'s offline edit at bob')
    expect(ra.scene.snapshot()).toEqual(rb.scene.snapshot())
    expect(Object.keys(ra.scene.get('box')!.props).sort()).toEqual(['bob0', 'bob1', 'bob2', 'bob3', 'bob4', 'by'])
  })
})
