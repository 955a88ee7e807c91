import type { Report } from "../transport/report.ts";

/** 128 + the signal's number (the same on x86-64 and arm64 Linux). */
const EXIT_BY_SIGNAL = { SIGINT: 128 + 2, SIGTERM: 128 + 15 } as const;

/**
 * SIGTERM / SIGINT handling: the first signal resolves `requested` so the
 * role can stop accepting, flush and clean up; a second one exits at once,
 * with the status a shell gives a process that signal ended (128 + its
 * number: 143 for SIGTERM, 130 for SIGINT).
 * `request()` asks for the same clean stop without a signal (serve: one
 * channel failed, the other stops).
 * SIGHUP is logged and otherwise ignored: the agent keeps streaming when the
 * terminal it was started from goes away, and it has no files to reopen
 * (logs go to stderr, which the init script redirects).
 */
export class Shutdown {
  readonly requested: Promise<string>;
  signal: string | undefined;
  private stopping = false;
  private resolve!: (reason: string) => void;
  private readonly handlers: [NodeJS.Signals, () => void][] = [];

  constructor(report?: Report) {
    const hangup = () => report?.("info", "SIGHUP ignored; use SIGTERM to stop");
    process.on("SIGHUP", hangup);
    this.handlers.push(["SIGHUP", hangup]);
    this.requested = new Promise((resolve) => (this.resolve = resolve));
    for (const name of ["SIGTERM", "SIGINT"] as const) {
      const handler = () => {
        if (this.signal) process.exit(EXIT_BY_SIGNAL[name]);
        this.signal = name;
        this.request(name);
      };
      process.on(name, handler);
      this.handlers.push([name, handler]);
    }
  }

  get isRequested(): boolean {
    return this.stopping;
  }

  /** Stops the run as the first signal would; `reason` is what `requested` resolves with. */
  request(reason: string): void {
    if (this.stopping) return;
    this.stopping = true;
    this.resolve(reason);
  }

  /** Resolves with `work`'s result, or undefined if a signal came first. */
  async race<T>(work: Promise<T>): Promise<T | undefined> {
    return Promise.race([work, this.requested.then(() => undefined)]);
  }

  dispose(): void {
    for (const [name, handler] of this.handlers) process.off(name, handler);
  }
}
