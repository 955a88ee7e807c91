/**
 * Adaptive optimizer: watches socket overflows (writes the kernel could not
 * take whole) and deadline drops; when they crowd a window it escalates the
 * connection (high-load socket buffers, a larger send queue, doubling per
 * level up to a bound); after a calm period (no pressure, and no more held
 * than the base buffers take) it relaxes back to the defaults.
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
  /** Does what was decided; `why` tells what was measured and the rule it met ("12 overflow events within 5000 ms (rule: 10)"). */
  apply: (state: AdaptiveState, decision: "escalate" | "relax", why: string) => void;
}

export const DEFAULT_ADAPTIVE = { threshold: 10, windowMs: 5_000, calmMs: 30_000, queueGrowth: 4 } as const;

export class AdaptiveOptimizer {
  /** The times of the last `threshold` pressure events (a ring), and each one's kind. */
  private readonly events: Float64Array;
  private readonly kinds: string[];
  private next = 0;
  private filled = 0;
  private lastEventAt = -Infinity;
  /** When the connection last held more than the base buffers take (busy): the calm starts over then too. */
  private lastBusyAt = -Infinity;
  private readonly now: () => number;
  state: AdaptiveState;
  escalations = 0;
  relaxations = 0;

  constructor(private readonly options: AdaptiveOptions) {
    if (options.threshold < 1) throw new RangeError(`adaptive threshold ${options.threshold}: must be >= 1`);
    this.events = new Float64Array(options.threshold);
    this.kinds = new Array<string>(options.threshold);
    this.now = options.now ?? (() => performance.now());
    this.state = { level: 0, ...options.base };
  }

  /**
   * Pressure events (overflows, deadline drops) found at one moment, by kind:
   * one burst, which escalates once however many it holds; the next level
   * needs pressure at a later moment.
   */
  note(burst: Readonly<Record<string, number>>): void {
    let count = 0;
    for (const kind in burst) count += Math.max(0, burst[kind]!);
    if (count === 0) return;
    const at = this.now();
    this.lastEventAt = at;
    // This burst and what the window held before it: what a decision tells was measured.
    const measured: Record<string, number> = {};
    for (const kind in burst) if (burst[kind]! > 0) measured[kind] = burst[kind]!;
    this.countWithinWindow(at, measured);
    // The ring keeps the last `threshold` events; a burst of more than that fills it alone.
    for (const kind in burst) {
      for (let i = Math.min(burst[kind]!, this.events.length); i > 0; i--) {
        this.events[this.next] = at;
        this.kinds[this.next] = kind;
        this.next = (this.next + 1) % this.events.length;
        if (this.filled < this.events.length) this.filled++;
      }
    }
    if (this.filled < this.events.length) return;
    // The oldest of the last `threshold` events is where `next` points now.
    const oldest = this.events[this.next];
    if (at - oldest <= this.options.windowMs) this.escalate(measured);
  }

  /**
   * Not calm, though no pressure event came: the connection holds more than
   * the base buffers take (its owner looks). Relaxing now would leave the
   * writer no room at once, and the drops that follow escalate again; the
   * calm period starts over instead.
   */
  busy(): void {
    if (this.state.level > 0) this.lastBusyAt = this.now();
  }

  /**
   * Called on a timer: relaxes after a calm period. The decision tells how
   * long there was no pressure, and, where the connection held more than the
   * base buffers since, how long it has not (the calm the rule measured).
   */
  tick(): void {
    if (this.state.level === 0) return;
    const now = this.now();
    const calm = now - Math.max(this.lastEventAt, this.lastBusyAt);
    if (calm < this.options.calmMs) return;
    this.relaxations++;
    // Pressure from before the calm period must not count toward the next escalation.
    this.filled = 0;
    this.state = { level: 0, ...this.options.base };
    const held = this.lastBusyAt > this.lastEventAt ? `, held within the base buffers for ${Math.round(calm)} ms` : "";
    this.options.apply(this.state, "relax", `no pressure for ${Math.round(now - this.lastEventAt)} ms${held} (rule: ${this.options.calmMs})`);
  }

  /** Adds the ring's events within the window that ends at `at` to `counts`, by kind (newest first, so it stops at the first older one). */
  private countWithinWindow(at: number, counts: Record<string, number>): void {
    const size = this.events.length;
    for (let i = 1; i <= this.filled; i++) {
      const slot = (this.next - i + size) % size;
      if (at - this.events[slot]! > this.options.windowMs) return;
      const kind = this.kinds[slot]!;
      counts[kind] = (counts[kind] ?? 0) + 1;
    }
  }

  /** `measured`: the events within the window, by kind, as the decision tells them. */
  private escalate(measured: Record<string, number>): void {
    const { highLoad, maxQueueFrames, threshold, windowMs } = this.options;
    const queueFrames = Math.min(maxQueueFrames, this.state.queueFrames * 2);
    const atTop = this.state.level > 0 && queueFrames === this.state.queueFrames;
    // Start a fresh window either way, so one burst escalates once.
    this.filled = 0;
    if (atTop) return;
    this.escalations++;
    this.state = { level: this.state.level + 1, ...highLoad, queueFrames };
    const events = Object.entries(measured).map(([kind, n]) => `${n} ${kind}`).join(" and ");
    this.options.apply(this.state, "escalate", `${events} events within ${windowMs} ms (rule: ${threshold})`);
  }
}
