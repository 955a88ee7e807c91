/**
 * Adaptive optimizer: watches socket overflows (writes the kernel could not
 * take whole) and deadline drops; when they crowd a window it escalates the
 * connection (high-load socket buffers, a larger send queue, doubling per
 * level up to a bound); after a calm period it relaxes back to the defaults.
 * It decides; `apply` does it for real (setsockopt, queue resize).
 */

export interface AdaptiveState {
  /** 0 = defaults; each escalation adds one. */
  level: number;
  sendBufferBytes: number;
  receiveBufferBytes: number;
  queueFrames: number;
}

export interface AdaptiveOptions {
  /** Buffers and queue at level 0. */
  base: { sendBufferBytes: number; receiveBufferBytes: number; queueFrames: number };
  /** Buffers from level 1 on (the high-load preset). */
  highLoad: { sendBufferBytes: number; receiveBufferBytes: number };
  /** The queue never grows beyond this. */
  maxQueueFrames: number;
  /** This many pressure events within `windowMs` escalate one level. */
  threshold: number;
  windowMs: number;
  /** No pressure event for this long relaxes to level 0. */
  calmMs: number;
  now?: () => number;
  apply: (state: AdaptiveState, decision: "escalate" | "relax", why: string) => void;
}

export const DEFAULT_ADAPTIVE = { threshold: 10, windowMs: 5_000, calmMs: 30_000, queueGrowth: 4 } as const;

export class AdaptiveOptimizer {
  private readonly events: Float64Array;
  private next = 0;
  private filled = 0;
  private lastEventAt = -Infinity;
  private readonly now: () => number;
  state: AdaptiveState;
  escalations = 0;
  relaxations = 0;

  get threshold(): number {
    return this.options.threshold;
  }

  constructor(private readonly options: AdaptiveOptions) {
    if (options.threshold < 1) throw new RangeError(`adaptive threshold ${options.threshold}: must be >= 1`);
    this.events = new Float64Array(options.threshold);
    this.now = options.now ?? (() => performance.now());
    this.state = { level: 0, ...options.base };
  }

  /** A pressure event: an overflow or a deadline drop. */
  note(kind: string): void {
    const at = this.now();
    this.lastEventAt = at;
    this.events[this.next] = at;
    this.next = (this.next + 1) % this.events.length;
    if (this.filled < this.events.length) this.filled++;
    if (this.filled < this.events.length) return;
    // The oldest of the last `threshold` events is where `next` points now.
    const oldest = this.events[this.next];
    if (at - oldest <= this.options.windowMs) this.escalate(kind);
  }

  /** Called on a timer: relaxes after a calm period. */
  tick(): void {
    if (this.state.level === 0) return;
    if (this.now() - this.lastEventAt < this.options.calmMs) return;
    this.relaxations++;
    // Pressure from before the calm period must not count toward the next escalation.
    this.filled = 0;
    this.state = { level: 0, ...this.options.base };
    this.options.apply(this.state, "relax", `no pressure for ${this.options.calmMs} ms`);
  }

  private escalate(kind: string): void {
    const { highLoad, maxQueueFrames, threshold, windowMs } = this.options;
    const queueFrames = Math.min(maxQueueFrames, this.state.queueFrames * 2);
    const atTop = this.state.level > 0 && queueFrames === this.state.queueFrames;
    // Start a fresh window either way, so one burst escalates once.
    this.filled = 0;
    if (atTop) return;
    this.escalations++;
    this.state = { level: this.state.level + 1, ...highLoad, queueFrames };
    this.options.apply(this.state, "escalate", `${threshold} ${kind} events within ${windowMs} ms`);
  }
}
