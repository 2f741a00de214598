// The terminal panel: the user's shell in a sandbox (docs/terminals.md) in xterm.js. The
// session lives on the server: hiding the panel or reloading the page detaches, and the next
// open attaches to the same running session and replays what the server kept of it.
import { type KilnApi, TerminalClient } from '@kiln/sdk'
import { FitAddon } from '@xterm/addon-fit'
import { Terminal } from '@xterm/xterm'
import { h } from './dom.js'

export class TerminalPanel {
  readonly element: HTMLElement
  private readonly screen: HTMLElement
  private readonly line: HTMLElement
  private term: Terminal | null = null
  private fit: FitAddon | null = null
  private client: TerminalClient | null = null
  private session = ''

  constructor(
    private readonly api: KilnApi,
    private readonly token: string,
  ) {
    this.screen = h('div', { class: 'term-screen' })
    this.line = h('span', { class: 'status', id: 'terminal-state' }, '')
    this.element = h(
      'section',
      { class: 'term-panel', id: 'terminal', hidden: true },
      h('div', { class: 'term-bar' }, h('strong', {}, 'Terminal'), this.line, h('button', { onclick: () => void this.closeSession(), id: 'terminal-close' }, 'End session')),
      this.screen,
    )
    window.addEventListener('resize', () => this.fitNow())
  }

  get open(): boolean {
    return !this.element.hidden
  }

  /** What the screen shows, line by line (the browser tests read it). */
  text(): string {
    const b = this.term?.buffer.active
    if (!b) return ''
    const lines: string[] = []
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '')
    return lines.join('\n')
  }

  async toggle(): Promise<void> {
    if (this.open) return this.hide()
    await this.show()
  }

  hide(): void {
    this.element.hidden = true
    this.client?.close() // the session goes on running on the server
    this.client = null
  }

  async show(): Promise<void> {
    this.element.hidden = false
    if (!this.term) {
      this.term = new Terminal({ fontSize: 13, cursorBlink: true, scrollback: 5000, theme: { background: '#11141a' } })
      this.fit = new FitAddon()
      this.term.loadAddon(this.fit)
      this.term.open(this.screen)
      this.term.onData((d) => this.client?.send(d))
      this.term.onResize(({ rows, cols }) => this.client?.resize(rows, cols))
    }
    this.fitNow()
    const { rows, cols } = this.term
    try {
      // The user's running shell if there is one (not a command's session), else a new one.
      const mine = await this.api.listTerminals()
      const running = mine.items.find((t) => t.running && t.command == null)
      this.session = running ? running.id : (await this.api.openTerminal({ rows, cols })).id
    } catch (e) {
      this.line.textContent = `cannot open a terminal: ${e instanceof Error ? e.message : String(e)}`
      return
    }
    this.term.reset() // the server replays what it kept, from offset 0
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/term`
    const client = new TerminalClient({ url, token: this.token, session: this.session, offset: 0 })
    this.client = client
    client.on('data', (d) => this.term?.write(d.bytes))
    client.on('attached', (a) => {
      if (a.lost > 0) this.term?.write(`\x1b[2m[${a.lost} earlier bytes no longer kept]\x1b[0m\r\n`)
    })
    client.on('exit', (e) => {
      this.term?.write(`\r\n\x1b[2m[${e.message}]\x1b[0m\r\n`)
      this.line.textContent = 'ended'
    })
    client.on('state', (s) => {
      if (s.state === 'open') this.line.textContent = `session ${this.session}`
      else if (s.state === 'waiting') this.line.textContent = `reconnecting in ${s.retryInMs} ms`
      else if (s.state === 'closed' && s.code && s.code !== 1000) this.line.textContent = `closed: ${s.reason || s.code}`
    })
    client.resize(rows, cols)
    client.connect()
    this.term.focus()
  }

  private async closeSession(): Promise<void> {
    const id = this.session
    this.hide()
    if (id) await this.api.closeTerminal(id).catch(() => undefined)
    this.session = ''
    this.term?.reset()
  }

  private fitNow(): void {
    if (this.open) this.fit?.fit()
  }
}
