// Projects and scenes: pick one to edit, or create them. Opening a scene sets the URL's
// hash to #/p/<project>/<scene> (a reload, or a link, opens it again).
import { ApiError } from '@kiln/sdk'
import { h } from './dom.js'
import type { Session } from './session.js'

const ID = /^[A-Za-z0-9_-]{1,64}$/

export function pickerView(s: Session, signOut: () => void): HTMLElement {
  const status = h('p', { class: 'status', id: 'picker-status' })
  const list = h('div', { class: 'projects', id: 'projects' })
  const fail = (e: unknown) => {
    status.textContent = e instanceof ApiError ? e.problem.detail : (e as Error).message
  }

  async function refresh() {
    list.replaceChildren()
    const page = await s.api.listProjects({ limit: 200 })
    for (const p of page.items) {
      const scenes = h('ul', { class: 'scenes' })
      const sceneId = h('input', { placeholder: 'new scene id', class: 'new-scene' })
      list.append(
        h(
          'section',
          { class: 'project', 'data-project': p.id },
          h('h2', {}, `${p.name} `, h('small', {}, `${p.id} · ${p.role}`)),
          scenes,
          p.role !== 'viewer' &&
            h(
              'form',
              {
                onsubmit: async (e: Event) => {
                  e.preventDefault()
                  try {
                    if (!ID.test(sceneId.value)) throw new Error('A scene id is 1-64 characters of A-Z a-z 0-9 _ -')
                    await s.api.createScene(p.id, { id: sceneId.value, name: sceneId.value })
                    location.hash = `#/p/${p.id}/${sceneId.value}`
                  } catch (err) {
                    fail(err)
                  }
                },
              },
              sceneId,
              h('button', { type: 'submit' }, 'Create scene'),
            ),
        ),
      )
      s.api.listScenes(p.id, { limit: 200 }).then((sp) => {
        for (const sc of sp.items) {
          scenes.append(h('li', {}, h('a', { href: `#/p/${p.id}/${sc.id}`, class: 'open-scene' }, `${sc.name} (${sc.id})`)))
        }
        if (!sp.items.length) scenes.append(h('li', { class: 'empty' }, 'No scenes yet.'))
      }, fail)
    }
    if (!page.items.length) list.append(h('p', { class: 'empty' }, 'No projects yet: create one.'))
  }

  const projectId = h('input', { id: 'new-project', placeholder: 'new project id' })
  const view = h(
    'div',
    { class: 'picker' },
    h('header', {}, h('h1', {}, 'Kiln'), h('span', {}, `Signed in as ${s.user.name} `), h('button', { onclick: signOut, id: 'sign-out' }, 'Sign out')),
    h(
      'form',
      {
        class: 'new-project',
        onsubmit: async (e: Event) => {
          e.preventDefault()
          try {
            if (!ID.test(projectId.value)) throw new Error('A project id is 1-64 characters of A-Z a-z 0-9 _ -')
            await s.api.createProject({ id: projectId.value, name: projectId.value })
            projectId.value = ''
            await refresh()
          } catch (err) {
            fail(err)
          }
        },
      },
      projectId,
      h('button', { type: 'submit', id: 'create-project' }, 'Create project'),
    ),
    status,
    list,
  )
  refresh().catch(fail)
  return view
}
