/**
 * A wall clock that steps under a running agent: Debian's libfaketime
 * (package faketime) preloaded into the process, its offset read from a file
 * at every clock read, so a test moves CLOCK_REALTIME by rewriting the file
 * (as NTP's first sync or `date -s` would) while CLOCK_MONOTONIC goes on
 * untouched, as it does on a real step.
 */
import { existsSync, writeFileSync } from "node:fs";

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/** Why the clock cannot be stepped here, or undefined when it can. */
export const faketimeMissing: string | undefined = existsSync(LIBFAKETIME) ? undefined : `${LIBFAKETIME} not found (Debian package faketime)`;

/** A wall clock shared by every process started with its env(): all of them see each step at once. */
export class SteppedClock {
  constructor(private readonly file: string) {
    this.step("+0");
  }

  /** The environment variables that put a process on this clock. */
  env(): Record<string, string> {
    return { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: this.file, FAKETIME_NO_CACHE: "1", DONT_FAKE_MONOTONIC: "1" };
  }

  /**
   * Sets the wall clock: an offset from the real time ("+600", "-1800", in
   * seconds; "+0" is the real time) or an absolute start ("@1970-01-01 00:00:10").
   */
  step(to: string): void {
    writeFileSync(this.file, `${to}\n`);
  }
}
