// Latency per operation ("enqueue_to_write", "write_call", "frame_age", "heartbeat_rtt", ...),
// in seconds: a smoothed level (EMA), its jitter, and percentiles over the recent window.
//
// Recording sits on the per-frame path: a caller holds its operation's recorder (operation()),
// which only does arithmetic on preallocated state, without a look-up by name. Percentiles are the expensive part and are computed only
// when someone asks (metrics scrape, optimizer tick).

export type LatencyWarningLevel = "target" | "max";

export type LatencyWarn = (
  operation: string,
  level: LatencyWarningLevel,
  valueSeconds: number,
  thresholdSeconds: number,
) => void;

export interface LatencyMonitorOptions {
  /** EMA weight of each new sample, 0 < alpha <= 1; also smooths jitter. Default 0.1. */
  alpha?: number;
  /** Samples kept per operation for percentiles and max. Default 1024. */
  windowSize?: number;
  /** A sample above this warns at level "target". Default 0.05 s. */
  targetSeconds?: number;
  /** A sample above this warns at level "max" (instead of "target"). Default 0.2 s. */
  maxSeconds?: number;
  /** At most one warning per operation and level within this many ms. Default 10 000. */
  warnIntervalMs?: number;
  /** Clock in ms for rate limiting; injected so tests are deterministic. Default performance.now. */
  now?: () => number;
  /** Called for samples above target/max, subject to the rate limit. Default: no warnings. */
  warn?: LatencyWarn;
  /** Called for every sample above target/max (its level as `warn` would give it), never rate limited: for counting. */
  crossed?: (operation: string, level: LatencyWarningLevel) => void;
}

export interface LatencySnapshot {
  /** Samples recorded since the operation was first seen (not only those in the window). */
  count: number;
  ema: number;
  jitter: number;
  /** Nearest-rank percentiles and max over the last min(count, windowSize) samples. */
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export const DEFAULT_LATENCY_ALPHA = 0.1;
export const DEFAULT_LATENCY_WINDOW = 1024;
export const DEFAULT_LATENCY_TARGET_SECONDS = 0.05;
export const DEFAULT_LATENCY_MAX_SECONDS = 0.2;
export const DEFAULT_LATENCY_WARN_INTERVAL_MS = 10_000;

const NO_SAMPLES = new Float64Array(0);

/**
 * One operation's statistics, made when the operation is first named; its
 * window of samples is allocated with the first sample, so a name that never
 * gets a valid one costs no window. A per-frame caller holds it
 * (LatencyMonitor.operation) and records into it directly, without looking
 * the operation up each time.
 */
export class LatencyOperation {
  count = 0;
  ema = 0;
  jitter = 0;
  last = 0;
  /** Ring of the most recent samples (empty until the first); `next` is where the next one goes. */
  window = NO_SAMPLES;
  next = 0;
  filled = 0;
  // -Infinity means "never warned", so the first crossing always warns.
  lastTargetWarnMs = -Infinity;
  lastMaxWarnMs = -Infinity;

  constructor(
    readonly name: string,
    private readonly monitor: LatencyMonitor,
  ) {}

  /**
   * Adds one sample in seconds. Returns false (and ignores it) when it is negative or not
   * finite, so one bad clock reading cannot poison the EMA forever.
   */
  record(seconds: number): boolean {
    if (!(seconds >= 0 && seconds < Infinity)) return false;
    const monitor = this.monitor;
    if (this.count === 0) {
      // Seed with the first sample instead of 0, so the EMA does not start far too low.
      this.ema = seconds;
      this.window = new Float64Array(monitor.windowSize);
      monitor.listed.push(this);
    } else {
      this.ema += monitor.alpha * (seconds - this.ema);
      // RFC 3550 style: smooth the absolute change between consecutive samples.
      this.jitter += monitor.alpha * (Math.abs(seconds - this.last) - this.jitter);
    }
    this.last = seconds;
    this.count++;

    const size = this.window.length;
    this.window[this.next] = seconds;
    this.next = this.next + 1 === size ? 0 : this.next + 1;
    if (this.filled < size) this.filled++;

    if (seconds > monitor.targetSeconds) monitor.crossed(this, seconds);
    return true;
  }
}

export class LatencyMonitor {
  readonly alpha: number;
  readonly windowSize: number;
  readonly targetSeconds: number;
  readonly maxSeconds: number;
  readonly warnIntervalMs: number;
  private readonly now: () => number;
  private readonly warn: LatencyWarn | undefined;
  private readonly counted: ((operation: string, level: LatencyWarningLevel) => void) | undefined;
  private readonly states = new Map<string, LatencyOperation>();
  /** The operations that hold samples, in the order of their first (LatencyOperation.record adds them). */
  readonly listed: LatencyOperation[] = [];
  /** Shared sort buffer for snapshot(): one per monitor, not per operation or per call. */
  private readonly scratch: Float64Array;

  constructor(options: LatencyMonitorOptions = {}) {
    this.alpha = options.alpha ?? DEFAULT_LATENCY_ALPHA;
    this.windowSize = options.windowSize ?? DEFAULT_LATENCY_WINDOW;
    this.targetSeconds = options.targetSeconds ?? DEFAULT_LATENCY_TARGET_SECONDS;
    this.maxSeconds = options.maxSeconds ?? DEFAULT_LATENCY_MAX_SECONDS;
    this.warnIntervalMs = options.warnIntervalMs ?? DEFAULT_LATENCY_WARN_INTERVAL_MS;
    this.now = options.now ?? (() => performance.now());
    this.warn = options.warn;
    this.counted = options.crossed;

    // User input is validated in config; these catch wiring mistakes early and loudly.
    if (!(this.alpha > 0 && this.alpha <= 1)) throw new RangeError(`alpha must be in (0, 1], got ${this.alpha}`);
    if (!Number.isInteger(this.windowSize) || this.windowSize < 1) {
      throw new RangeError(`windowSize must be a positive integer, got ${this.windowSize}`);
    }
    if (!(this.targetSeconds > 0 && this.targetSeconds <= this.maxSeconds)) {
      throw new RangeError(`need 0 < targetSeconds <= maxSeconds, got ${this.targetSeconds} and ${this.maxSeconds}`);
    }
    if (!(this.warnIntervalMs >= 0)) throw new RangeError(`warnIntervalMs must be >= 0, got ${this.warnIntervalMs}`);

    this.scratch = new Float64Array(this.windowSize);
  }

  /**
   * The operation's recorder, created the first time it is named; it is listed
   * (operations, snapshot) from its first sample on.
   */
  operation(name: string): LatencyOperation {
    let operation = this.states.get(name);
    if (operation === undefined) {
      operation = new LatencyOperation(name, this);
      this.states.set(name, operation);
    }
    return operation;
  }

  /** Adds one sample in seconds to `operation` (see LatencyOperation.record). */
  record(operation: string, seconds: number): boolean {
    return this.operation(operation).record(seconds);
  }

  /** A sample of `operation` above the target: counted every time, and warns within the rate limit. */
  crossed(operation: LatencyOperation, seconds: number): void {
    if (this.counted !== undefined) this.counted(operation.name, seconds > this.maxSeconds ? "max" : "target");
    if (this.warn !== undefined) this.maybeWarn(operation.name, operation, seconds);
  }

  private maybeWarn(operation: string, s: LatencyOperation, seconds: number): void {
    const nowMs = this.now();
    // A sample above max reports only "max": one event, at its most severe level.
    if (seconds > this.maxSeconds) {
      if (nowMs - s.lastMaxWarnMs < this.warnIntervalMs) return;
      s.lastMaxWarnMs = nowMs;
      this.warn!(operation, "max", seconds, this.maxSeconds);
    } else {
      if (nowMs - s.lastTargetWarnMs < this.warnIntervalMs) return;
      s.lastTargetWarnMs = nowMs;
      this.warn!(operation, "target", seconds, this.targetSeconds);
    }
  }

  /**
   * Current statistics for one operation, or undefined if it has never been
   * recorded; percentiles and max over the window, or over only its `latest`
   * samples (those since an earlier look, as far as the window holds them).
   */
  snapshot(operation: string, latest = Infinity): LatencySnapshot | undefined {
    const s = this.states.get(operation);
    if (s === undefined || s.count === 0) return undefined;
    const n = Math.max(1, Math.min(s.filled, latest));
    // Sort a copy: the ring must keep its arrival order for eviction. The newest n samples end
    // just before `next`, wrapping round to the end of a full ring.
    const sorted = this.scratch.subarray(0, n);
    const wrapped = n - s.next;
    if (wrapped <= 0) sorted.set(s.window.subarray(s.next - n, s.next));
    else {
      sorted.set(s.window.subarray(s.filled - wrapped, s.filled));
      sorted.set(s.window.subarray(0, s.next), wrapped);
    }
    sorted.sort();
    return {
      count: s.count,
      ema: s.ema,
      jitter: s.jitter,
      p50: nearestRank(sorted, 50),
      p95: nearestRank(sorted, 95),
      p99: nearestRank(sorted, 99),
      max: sorted[n - 1],
    };
  }

  /** Samples recorded for `operation` so far (0 when never). */
  recorded(operation: string): number {
    return this.states.get(operation)?.count ?? 0;
  }

  /** Operation names in the order they were first recorded. */
  operations(): string[] {
    return this.listed.map((operation) => operation.name);
  }
}

/** Nearest-rank percentile: the smallest sample with at least `percent`% of samples at or below it. */
function nearestRank(sorted: Float64Array, percent: number): number {
  // Integer percent keeps percent * n exact, so ceil() never rounds up a float artefact.
  const rank = Math.ceil((percent * sorted.length) / 100);
  return sorted[Math.max(rank, 1) - 1];
}
