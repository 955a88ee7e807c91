/** What the limiter says about lines it held back, once their window ends. */
export interface SuppressedLines<L> {
  component: string;
  message: string;
  /** The level of the last line held back. */
  level: L;
  count: number;
  /** How long the window was open, in ms. */
  windowMs: number;
}

export interface LogRateLimit {
  /** Lines of one kind written per window; the rest are only counted. */
  lines: number;
  windowMs: number;
}

/** At most 10 lines of one kind per 10 s: a peer reconnecting in a loop writes about a line a second of each kind it causes, not one per event. */
export const DEFAULT_LOG_RATE_LIMIT: LogRateLimit = { lines: 10, windowMs: 10_000 };

interface Window<L> {
  component: string;
  message: string;
  /** performance.now() at the first line: a step of the wall clock cannot make the window negative or days long. */
  opened: number;
  written: number;
  suppressed: number;
  level: L;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Rate limit for log lines, per kind: a kind is a component and a message
 * (the fields vary, the text does not), so a flood of one kind never
 * silences another. The first `lines` of a kind in a window are written;
 * the rest are counted, and when the window ends one summary says how many
 * were held back. What matters is counted elsewhere (metrics, readings);
 * this only keeps the log readable and small.
 */
export class LogRateLimiter<L> {
  private readonly windows = new Map<string, Window<L>>();

  constructor(
    private readonly limit: LogRateLimit,
    private readonly summarize: (suppressed: SuppressedLines<L>) => void,
  ) {}

  /** True when the line may be written. */
  admit(component: string, level: L, message: string): boolean {
    const key = `${component}\0${message}`;
    const window = this.windows.get(key);
    if (!window) {
      const timer = setTimeout(() => this.close(key), this.limit.windowMs);
      // A pending summary must not keep a finished process alive; flush() writes it.
      timer.unref?.();
      this.windows.set(key, { component, message, opened: performance.now(), written: 1, suppressed: 0, level, timer });
      return true;
    }
    if (window.written < this.limit.lines) {
      window.written++;
      return true;
    }
    window.suppressed++;
    window.level = level;
    return false;
  }

  /** Ends every open window now, summarizing what each held back (at exit). */
  flush(): void {
    for (const key of [...this.windows.keys()]) this.close(key);
  }

  private close(key: string): void {
    const window = this.windows.get(key);
    if (!window) return;
    clearTimeout(window.timer);
    this.windows.delete(key);
    if (window.suppressed > 0) {
      const { component, message, level, suppressed: count } = window;
      this.summarize({ component, message, level, count, windowMs: performance.now() - window.opened });
    }
  }
}
