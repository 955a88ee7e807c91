import { CounterRate } from "./counter-rate.ts";

/**
 * A peer connecting and closing in a loop (on an audio socket, or the HTTP
 * port) leaves the process megabytes of what its connections allocated: 10
 * to 20 MiB after 700,000 of them. Bun collects it at its collection timer,
 * 30 s apart with the device's runtime settings (src/bench/device-runtime.ts),
 * so the process stays that much larger for up to half a minute after each
 * burst (bench/FINDINGS.md). This many connections, counted while they keep
 * coming, are a burst worth a collection once they stop.
 */
export const BURST_CONNECTIONS = 1000;

/**
 * Fewer connections a second than this, and the burst has subsided: a
 * collector scraping --metrics, a client reconnecting with its backoff, come
 * far slower.
 */
export const QUIET_PER_SECOND = 10;

/**
 * The rate is judged over at least this long, however often the sampler
 * ticks (--adaptive-window-ms can make it 10 ms): a short tick between two
 * connections is no pause.
 */
export const BURST_JUDGED_OVER_MS = 1000;

/**
 * At most one collection this often: a peer that bursts, pauses and bursts
 * again is collected after at most once a minute, a few ms of the thread each.
 */
export const COLLECT_SPACING_MS = 60_000;

/**
 * Watches the process's connection count on the sampler's tick and asks for
 * one collection once a burst of connections has subsided: never while they
 * come, never per connection, never per frame, at most once a
 * COLLECT_SPACING_MS.
 */
export class ConnectionBurst {
  private readonly connections: CounterRate;
  /** Connections of the burst so far that no collection has followed yet. */
  private burst = 0;
  private collectedAt = -Infinity;

  constructor(
    connections: number,
    now: number,
    /** The collection, told how many connections the burst held. */
    private readonly collect: (connections: number) => void,
  ) {
    this.connections = new CounterRate(connections, now, BURST_JUDGED_OVER_MS);
  }

  /** A burst has been seen that no collection has followed yet: the sampler ticks on for it without frames. */
  get pending(): boolean {
    return this.burst >= BURST_CONNECTIONS;
  }

  /** `connections`: the process's connections so far (every listener's and client's), read only when a rate is judged. */
  sample(connections: () => number, now = performance.now()): void {
    const judged = this.connections.judge(connections, now);
    if (!judged) return;
    const { fresh, seconds } = judged;
    if (fresh >= QUIET_PER_SECOND * seconds) {
      this.burst += fresh;
      return;
    }
    // Quiet: a few connections were no burst; a burst waits for the spacing.
    if (this.burst < BURST_CONNECTIONS) {
      this.burst = 0;
      return;
    }
    if (now - this.collectedAt < COLLECT_SPACING_MS) return;
    const burst = this.burst;
    this.burst = 0;
    this.collectedAt = now;
    this.collect(burst);
  }
}
