// The REST API (docs/api.md, docs/openapi.yaml) over fetch. Request and response types are
// generated from docs/openapi.yaml (src/generated/openapi.ts). Errors are ApiError with the
// RFC 9457 problem the API answered. Read-your-writes: the client keeps the newest
// `Kiln-After` a write answered and sends it back, so its next reads see its writes even
// from a read replica (docs/persistence.md).
import type { components, operations } from './generated/openapi.js'

export type Schemas = components['schemas']
export type Problem = Schemas['Problem']
type Body<Op extends keyof operations> = operations[Op] extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never
type Ok<Op extends keyof operations, Code extends number> = operations[Op]['responses'] extends Record<Code, { content: { 'application/json': infer R } }> ? R : never

/** A refused request: `status` and the problem document (`type` ends with a stable code, e.g. `.../sha256-required`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
    /** Retry-After, seconds, when the API sent one. */
    readonly retryAfterS?: number,
  ) {
    super(`${status} ${problem.title}: ${problem.detail}`)
    this.name = 'ApiError'
  }
  /** The last path segment of the problem's type (`not-found`, `duplicate`, ...). */
  get code(): string {
    return this.problem.type.split('/').pop() ?? ''
  }
}

export interface ApiOptions {
  /** The API's origin, e.g. https://kiln.example.com (no trailing /v1). */
  baseUrl: string
  /** A user's JWT, the service key (server side only: it may do anything), or a function returning either. */
  token: string | (() => string | Promise<string>)
  /** Default: the global fetch. */
  fetch?: typeof fetch
}

const enc = encodeURIComponent

export class KilnApi {
  private after = ''
  private readonly fetchImpl: typeof fetch

  constructor(private readonly options: ApiOptions) {
    this.fetchImpl = options.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a))
  }

  /** Any route: JSON in, JSON out; throws ApiError on a status >= 400. */
  async request<T>(method: string, path: string, body?: unknown, query?: Record<string, string | number | undefined>): Promise<{ status: number; body: T; headers: Headers }> {
    const url = new URL(path, this.options.baseUrl)
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v))
    const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: 'application/json' }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    if (this.after) headers['Kiln-After'] = this.after
    const res = await this.fetchImpl(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const after = res.headers.get('Kiln-After')
    if (after) this.after = after
    const text = await res.text()
    let parsed: unknown = undefined
    if (text) {
      try {
        parsed = JSON.parse(text)
      } catch {
        parsed = text
      }
    }
    if (res.status >= 400) {
      const p = parsed && typeof parsed === 'object' ? (parsed as Problem) : { type: 'about:blank', title: res.statusText, status: res.status, detail: String(parsed ?? '') }
      const ra = res.headers.get('Retry-After')
      throw new ApiError(res.status, p, ra ? Number(ra) : undefined)
    }
    return { status: res.status, body: parsed as T, headers: res.headers }
  }

  private async json<T>(method: string, path: string, body?: unknown, query?: Record<string, string | number | undefined>): Promise<T> {
    return (await this.request<T>(method, path, body, query)).body
  }

  // Identity and tokens
  /** Server side, with the service key: a token for a user (POST /v1/tokens). Never in a browser. */
  mintToken(body: Body<'mintToken'>): Promise<Ok<'mintToken', 201>> {
    return this.json('POST', '/v1/tokens', body)
  }
  /** Server side, with the service key: every token of the user stops working (POST /v1/users/{u}/revoke). */
  revokeTokens(user: string): Promise<Ok<'revokeTokens', 200>> {
    return this.json('POST', `/v1/users/${enc(user)}/revoke`, {})
  }
  me(): Promise<Ok<'getMe', 200>> {
    return this.json('GET', '/v1/me')
  }

  // Terminal sessions (docs/terminals.md): a user's own; read and typed into with TerminalClient
  /** A shell in a sandbox of its own; `size` defaults to 24 rows of 80 columns. */
  /** A shell, or `command` (a program and its arguments, no shell parsing) instead. */
  openTerminal(opening?: { rows?: number; cols?: number; command?: string[] }): Promise<Ok<'openTerminal', 201>> {
    return this.json('POST', '/v1/terminals', opening)
  }
  listTerminals(): Promise<Ok<'listTerminals', 200>> {
    return this.json('GET', '/v1/terminals')
  }
  getTerminal(id: string): Promise<Ok<'getTerminal', 200>> {
    return this.json('GET', `/v1/terminals/${enc(id)}`)
  }
  async closeTerminal(id: string): Promise<void> {
    await this.request('DELETE', `/v1/terminals/${enc(id)}`)
  }

  // Projects and members
  createProject(body: Body<'createProject'>): Promise<Ok<'createProject', 201>> {
    return this.json('POST', '/v1/projects', body)
  }
  listProjects(page: { limit?: number; cursor?: string } = {}): Promise<Ok<'listProjects', 200>> {
    return this.json('GET', '/v1/projects', undefined, page)
  }
  getProject(project: string): Promise<Ok<'getProject', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}`)
  }
  renameProject(project: string, name: string): Promise<Ok<'renameProject', 200>> {
    return this.json('PATCH', `/v1/projects/${enc(project)}`, { name })
  }
  async deleteProject(project: string): Promise<void> {
    await this.request('DELETE', `/v1/projects/${enc(project)}`)
  }
  listMembers(project: string): Promise<Ok<'listMembers', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/members`)
  }
  putMember(project: string, user: string, role: Schemas['Role']): Promise<Ok<'putMember', 200>> {
    return this.json('PUT', `/v1/projects/${enc(project)}/members/${enc(user)}`, { role })
  }
  async removeMember(project: string, user: string): Promise<void> {
    await this.request('DELETE', `/v1/projects/${enc(project)}/members/${enc(user)}`)
  }

  // Scenes
  createScene(project: string, body: Body<'createScene'>): Promise<Ok<'createScene', 201>> {
    return this.json('POST', `/v1/projects/${enc(project)}/scenes`, body)
  }
  listScenes(project: string, page: { limit?: number; cursor?: string } = {}): Promise<Ok<'listScenes', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/scenes`, undefined, page)
  }
  getScene(project: string, scene: string): Promise<Ok<'getScene', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/scenes/${enc(scene)}`)
  }
  async deleteScene(project: string, scene: string): Promise<void> {
    await this.request('DELETE', `/v1/projects/${enc(project)}/scenes/${enc(scene)}`)
  }
  /** The scene's entities that show assets, placed in the world, with each asset's levels. */
  streamScene(project: string, scene: string): Promise<Ok<'streamScene', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/scenes/${enc(scene)}/stream`)
  }

  // Assets
  listAssets(project: string, page: { limit?: number; cursor?: string } = {}): Promise<Ok<'listAssets', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/assets`, undefined, page)
  }
  getAsset(project: string, asset: string): Promise<Ok<'getAsset', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/assets/${enc(asset)}`)
  }
  getManifest(project: string, asset: string): Promise<Ok<'getAssetManifest', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/assets/${enc(asset)}/manifest`)
  }
  async deleteAsset(project: string, asset: string): Promise<void> {
    await this.request('DELETE', `/v1/projects/${enc(project)}/assets/${enc(asset)}`)
  }
  processAsset(project: string, asset: string): Promise<Ok<'processAsset', 202>> {
    return this.json('POST', `/v1/projects/${enc(project)}/assets/${enc(asset)}/process`, {})
  }

  // Uploads (the steps; Uploader drives them)
  createUpload(project: string, body: Body<'createUpload'>): Promise<{ status: number; body: Schemas['UploadStarted'] | Schemas['Deduplicated'] }> {
    return this.request('POST', `/v1/projects/${enc(project)}/uploads`, body)
  }
  getUpload(project: string, upload: string): Promise<Ok<'getUpload', 200>> {
    return this.json('GET', `/v1/projects/${enc(project)}/uploads/${enc(upload)}`)
  }
  presignParts(project: string, upload: string, parts: number[]): Promise<Ok<'presignParts', 200>> {
    return this.json('POST', `/v1/projects/${enc(project)}/uploads/${enc(upload)}/parts`, { parts })
  }
  completeUpload(project: string, upload: string, body: Body<'completeUpload'> | Record<string, never> = {}): Promise<Schemas['Completed']> {
    return this.json('POST', `/v1/projects/${enc(project)}/uploads/${enc(upload)}/complete`, body)
  }
  async abortUpload(project: string, upload: string): Promise<void> {
    await this.request('DELETE', `/v1/projects/${enc(project)}/uploads/${enc(upload)}`)
  }
}
