import { NotifySocket } from "../transport/notify-socket.ts";
import type { Report } from "../transport/report.ts";

/** The longest a timer waits (2^31 - 1 ms, about 24.8 days): a longer delay is taken as 1 ms. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** 128 + the signal's number (the same on x86-64 and arm64 Linux). */
const EXIT_BY_SIGNAL = { SIGINT: 128 + 2, SIGTERM: 128 + 15 } as const;

/**
 * SIGTERM / SIGINT handling: the first signal resolves `requested` so the
 * role can stop accepting, flush and clean up; a second one exits at once,
 * with the status a shell gives a process that signal ended (128 + its
 * number: 143 for SIGTERM, 130 for SIGINT).
 * `request()` asks for the same clean stop without a signal (serve: one
 * channel failed, the other stops).
 * SIGHUP, SIGUSR1 and SIGUSR2 are logged and otherwise ignored: the agent
 * keeps streaming when the terminal it was started from goes away, and it
 * has no files to reopen (logs go to stderr, which the init script
 * redirects), so a log rotation's `kill -USR1` meant for another daemon does
 * not end it (by default each would, leaving its socket behind).
 */
export class Shutdown {
  readonly requested: Promise<string>;
  signal: string | undefined;
  private stopping = false;
  private resolve!: (reason: string) => void;
  private readonly handlers: [NodeJS.Signals, () => void][] = [];
  /** The service manager's notification socket, when it gave one (systemd, Type=notify). */
  private readonly notify: NotifySocket | undefined;
  private readonly watchdog: ReturnType<typeof setInterval> | undefined;
  private isReady = false;

  /**
   * `env`'s NOTIFY_SOCKET (systemd's, see sd_notify(3)) is told READY=1 once
   * the role is up (ready()), STOPPING=1 as it begins to stop, and, when
   * WATCHDOG_USEC asks for it, WATCHDOG=1 twice per interval: a process
   * whose event loop stops turning is then restarted by its manager.
   */
  constructor(report?: Report, env: Record<string, string | undefined> = {}) {
    this.notify = openNotifySocket(env, report);
    const watchdogMs = this.notify ? watchdogInterval(env) : undefined;
    if (watchdogMs !== undefined) {
      this.tell("WATCHDOG=1");
      // A watchdog of 50 days or more (WatchdogSec=60d) is pinged more often than asked, never every millisecond.
      this.watchdog = setInterval(() => this.tell("WATCHDOG=1"), Math.min(watchdogMs / 2, LONGEST_TIMER_MS));
      this.watchdog.unref();
    }
    for (const name of ["SIGHUP", "SIGUSR1", "SIGUSR2"] as const) {
      const ignored = () => report?.("info", `${name} ignored; use SIGTERM to stop`);
      process.on(name, ignored);
      this.handlers.push([name, ignored]);
    }
    this.requested = new Promise((resolve) => (this.resolve = resolve));
    for (const name of STOP_SIGNALS) {
      const handler = () => {
        if (this.signal) {
          // Said last, after what the exit closes on its way (a client cut off): a log
          // without its "stopped" lines does not just end.
          process.once("exit", () => report?.("warn", `${name} again during the stop: exiting at once`, { exit_code: EXIT_BY_SIGNAL[name] }));
          process.exit(EXIT_BY_SIGNAL[name]);
        }
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
    this.tell("STOPPING=1");
    this.resolve(reason);
  }

  /** The role is up: its sockets listen (a server), or it has begun to connect (a client). */
  ready(): void {
    if (this.isReady || this.stopping) return;
    this.isReady = true;
    this.tell("READY=1");
  }

  private tell(text: string): void {
    // A lost notification is the manager's to notice (a start that times out, a watchdog that fires): nothing to do here.
    this.notify?.send(text);
  }

  /** Resolves with `work`'s result, or undefined if a signal came first. */
  async race<T>(work: Promise<T>): Promise<T | undefined> {
    return Promise.race([work, this.requested.then(() => undefined)]);
  }

  /**
   * Lets go of its handlers and the service manager's socket. `processEnds`:
   * the process exits next, with the run's code, once its log file's last
   * lines are on the disk (LineWriter.settled), which takes as long as the
   * disk does: its handlers stay, so a SIGHUP meanwhile is still ignored and
   * a stop's second signal still exits at once, where the default action,
   * back once the last handler goes, would end it 129, 143 or 130. A SIGTERM
   * or SIGINT that comes once the run ended on its own (a stop that raced
   * the run's own end) is caught and ignored.
   */
  dispose(processEnds = false): void {
    const stopped = this.signal !== undefined;
    // Ended on its own: a stop's signal from now on is ignored (ignoredAtEnd in place of the handler that would stop it).
    if (processEnds && !stopped) for (const name of STOP_SIGNALS) process.on(name, ignoredAtEnd);
    for (const [name, handler] of this.handlers) {
      // While the process ends: after a stop every handler stays (a second signal exits at once); else all but the stop's.
      const stays = processEnds && (stopped || !STOP_SIGNALS.includes(name as StopSignal));
      if (!stays) process.off(name, handler);
    }
    clearInterval(this.watchdog);
    this.notify?.dispose();
  }
}

/** The signals that stop a run: a second one exits at once. */
const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;
type StopSignal = (typeof STOP_SIGNALS)[number];

/** A signal that comes once the run has ended: its exit code is the run's. */
function ignoredAtEnd(): void {}

/** NOTIFY_SOCKET's socket, if set; one that cannot be used is warned of, and the agent runs on without it. */
function openNotifySocket(env: Record<string, string | undefined>, report?: Report): NotifySocket | undefined {
  const name = env.NOTIFY_SOCKET;
  if (!name) return undefined;
  const socket = NotifySocket.open(name);
  if (typeof socket !== "string") return socket;
  report?.("warn", `${socket}; the service manager is not told when the agent is ready`);
  return undefined;
}

/** The watchdog's interval (ms) that WATCHDOG_USEC asks of this process (WATCHDOG_PID, when set, names it), or undefined. */
export function watchdogInterval(env: Record<string, string | undefined>): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== process.pid) return undefined;
  return usec / 1000;
}
