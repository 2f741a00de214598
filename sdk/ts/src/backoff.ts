// Reconnection delays: exponential backoff with full jitter (AWS Architecture Blog,
// "Exponential Backoff And Jitter"): attempt n waits a uniform random time in
// [0, min(maxMs, baseMs * 2^n)].
export interface BackoffOptions {
  /** ms; the first attempt's cap. Default 250. */
  baseMs?: number
  /** ms; no wait is longer. Default 10,000. */
  maxMs?: number
  /** [0, 1) source; default Math.random. */
  random?: () => number
}

export class Backoff {
  private attempt = 0
  private readonly baseMs: number
  private readonly maxMs: number
  private readonly random: () => number

  constructor(o: BackoffOptions = {}) {
    this.baseMs = o.baseMs ?? 250
    this.maxMs = o.maxMs ?? 10_000
    this.random = o.random ?? Math.random
  }

  /** The wait before the next attempt, ms; each call doubles the cap up to maxMs. */
  next(): number {
    const cap = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30))
    this.attempt++
    return Math.floor(this.random() * cap)
  }

  /** A connection succeeded: start again from baseMs. */
  reset(): void {
    this.attempt = 0
  }
}
