// The content browser: the project's assets (drag one into the viewport to place it), and
// uploads by drag-and-drop or the file chooser, with progress. Uploads resume: the SDK
// remembers each one in localStorage, so after a reload dropping the same file again sends
// only the parts the store does not hold; the panel lists the uploads left unfinished.
import { ApiError, type KilnApi, Uploader, type components } from '@kiln/sdk'
import { formatBytes, h } from './dom.js'

type Asset = components['schemas']['Asset']
export const ASSET_MIME = 'application/x-kiln-asset'

export class ContentBrowser {
  readonly element: HTMLElement
  private readonly list = h('ul', { class: 'assets', id: 'assets' })
  private readonly uploads = h('ul', { class: 'uploads', id: 'uploads' })
  private readonly unfinished = h('ul', { class: 'unfinished', id: 'unfinished' })
  private readonly states = new Map<string, string>()

  constructor(
    private readonly api: KilnApi,
    private readonly project: string,
  ) {
    const input = h('input', { type: 'file', multiple: true, id: 'upload-input', style: { display: 'none' } })
    input.addEventListener('change', () => {
      for (const f of input.files ?? []) void this.upload(f)
      input.value = ''
    })
    const zone = h(
      'div',
      { class: 'dropzone', id: 'dropzone' },
      'Drop files here, or ',
      h('button', { onclick: () => input.click(), id: 'choose-files' }, 'choose files'),
      input,
    )
    zone.addEventListener('dragover', (e) => {
      if (e.dataTransfer?.types.includes('Files')) {
        e.preventDefault()
        zone.classList.add('over')
      }
    })
    zone.addEventListener('dragleave', () => zone.classList.remove('over'))
    zone.addEventListener('drop', (e) => {
      e.preventDefault()
      zone.classList.remove('over')
      for (const f of e.dataTransfer?.files ?? []) void this.upload(f)
    })
    this.element = h('aside', { class: 'content' }, h('h3', {}, 'Content'), zone, this.unfinished, this.uploads, this.list)
    this.showUnfinished()
    void this.refresh()
  }

  async refresh(): Promise<void> {
    try {
      const page = await this.api.listAssets(this.project, { limit: 200 })
      this.list.replaceChildren(...page.items.map((a) => this.item(a)))
      if (!page.items.length) this.list.append(h('li', { class: 'empty' }, 'No assets yet.'))
    } catch (e) {
      this.list.replaceChildren(h('li', { class: 'error' }, (e as Error).message))
    }
  }

  /** The pipeline's progress on an asset (a notification). */
  setState(asset: string, text: string): void {
    this.states.set(asset, text)
    const el = this.list.querySelector(`[data-asset="${CSS.escape(asset)}"] .state`)
    if (el) el.textContent = text
  }

  private item(a: Asset): HTMLElement {
    const li = h(
      'li',
      { draggable: true, 'data-asset': a.id, title: `${a.name} (${formatBytes(a.size)}): drag into the scene` },
      h('span', { class: 'name' }, a.name),
      h('span', { class: 'state' }, this.states.get(a.id) ?? formatBytes(a.size)),
    )
    li.addEventListener('dragstart', (e) => {
      e.dataTransfer?.setData(ASSET_MIME, a.id)
      e.dataTransfer?.setData('text/plain', a.name)
    })
    return li
  }

  private showUnfinished(): void {
    const prefix = `kiln-upload:${this.project}:`
    const items: HTMLElement[] = []
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i)
      if (!k?.startsWith(prefix)) continue
      // <name>:<size>:<last modified>: the name may hold ':' itself.
      const parts = k.slice(prefix.length).split(':')
      const size = parts.at(-2)
      const name = parts.slice(0, -2).join(':')
      items.push(h('li', { class: 'unfinished-item' }, `Unfinished: ${name} (${formatBytes(Number(size))}): drop it again to resume`))
    }
    this.unfinished.replaceChildren(...items)
  }

  /** Uploads one file with a progress bar; resumes what an earlier page left unfinished. */
  async upload(file: File): Promise<void> {
    const bar = h('progress', { max: 1, value: 0 })
    const label = h('span', { class: 'label' }, `${file.name}: starting`)
    const row = h('li', { 'data-upload': file.name }, label, bar)
    this.uploads.prepend(row)
    const uploader = new Uploader(this.api) // one per file: its progress events are this file's
    const off = uploader.on('progress', (p) => {
      bar.value = p.total ? p.sent / p.total : 1
      row.dataset.phase = p.phase
      row.dataset.resumed = String(p.resumed)
      label.textContent = `${file.name}: ${p.phase}${p.resumed ? ' (resumed)' : ''} ${formatBytes(p.sent)} / ${formatBytes(p.total)}`
    })
    try {
      const r = await uploader.upload(file, { project: this.project })
      label.textContent = r.deduplicated ? `${file.name}: the project has it already` : `${file.name}: uploaded`
      row.dataset.phase = 'done'
      row.dataset.asset = r.asset.id
      await this.refresh()
    } catch (e) {
      row.dataset.phase = 'failed'
      label.textContent = `${file.name}: ${e instanceof ApiError ? e.problem.detail : (e as Error).message}`
    } finally {
      off()
      this.showUnfinished()
    }
  }
}
