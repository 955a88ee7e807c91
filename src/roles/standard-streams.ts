import { closeSync, fstatSync } from "node:fs";
import { appendedFile } from "../io/appended-file.ts";
import { descriptorKind } from "../io/descriptor-kind.ts";
import { ownNonBlockingDescription } from "../io/own-description.ts";
import { stderrLines } from "../observe/line-writer.ts";
import type { Logger } from "../observe/logger.ts";
import type { Report } from "../transport/report.ts";
import { setNonBlocking } from "../transport/socket-options.ts";

/** What stdout or stderr is open on, when its writer may keep its reader's pace there. */
type StreamKind = "pipe" | "terminal" | "socket";

/** A pipe, a terminal (or another character device) or a socket; undefined: a file, or nothing open. */
function kindOf(fd: number): StreamKind | undefined {
  try {
    const kind = descriptorKind(fd);
    return kind === "file" || kind === "other" ? undefined : kind;
  } catch {
    return undefined;
  }
}

/** Whether stderr is stdout's own description's file (`2>&1`). */
function stderrSharesStdout(): boolean {
  try {
    const [out, err] = [fstatSync(1), fstatSync(2)];
    return err.dev === out.dev && err.ino === out.ino;
  } catch {
    return false;
  }
}

/**
 * Whether /proc/self/fd/FD opens again for writing, as ByteSink and the log
 * do to have a non-blocking description of their own: a pipe or terminal of
 * another user's (the agent run by `setpriv`, `start-stop-daemon --chuid`)
 * does not (EACCES), whatever the descriptor itself allows.
 */
function opensAgain(fd: number): boolean {
  const own = ownNonBlockingDescription(fd);
  if (own === undefined) return false;
  closeSync(own);
  return true;
}

/**
 * Sets O_NONBLOCK on `fd`, so that a reader who stops reading holds up its
 * writer (ByteSink.waiting, the log's backlog), never the process inside
 * write(). The flag belongs to the open description, shared with whoever
 * handed it down: it is put back at exit (putBackAtExit). False, with
 * `consequence` warned, when it cannot be set.
 */
function nonBlocking(fd: number, report: Report | undefined, consequence: string): boolean {
  const set = setNonBlocking(fd);
  if (!set.ok) {
    report?.("warn", `cannot make ${fd === 1 ? "stdout" : "stderr"} non-blocking; ${consequence}`, { error: set.message });
    return false;
  }
  putBackAtExit(set.restore, fd === 2 || stderrSharesStdout());
  return true;
}

/** Flags to put back at exit, in the order they were set; and whether one is stderr's description. */
const putBack: (() => void)[] = [];
let logsThere = false;

/**
 * At exit: the log's waiting lines are offered (at most 1 s), then the flags
 * are put back, the last set first (stdout and stderr may be one description:
 * the first flags read are the ones it had). Once stderr's description is
 * blocking again, the log writes no more: a line written into a full pipe
 * then (a listener closing its client as the process exits) would hold the
 * exit for good.
 */
function putBackAtExit(restore: () => void, stderrs: boolean): void {
  if (putBack.length === 0) {
    process.on("exit", () => {
      const log = stderrLines();
      log.drain();
      if (logsThere) log.retire();
      for (const put of putBack.reverse()) put();
    });
  }
  putBack.push(restore);
  logsThere ||= stderrs;
}

/**
 * Stdout as the sink "-" of a role that keeps every frame (`output recv`,
 * `input serve` on its own). A pipe is written through a non-blocking
 * description of its own (ByteSink), which needs nothing here unless it
 * cannot be opened again (another user's pipe); a socket (a parent that
 * spawned the agent with socketpair stdio, as libuv and socat do) never can.
 * Those get the flag themselves.
 */
export function keepPaceOnStdout(report: Report): void {
  const kind = kindOf(1);
  if (kind === "socket" || (kind !== undefined && !opensAgain(1))) nonBlocking(1, report, "a reader that stops reading holds up the process");
}

/**
 * Stderr, the log's: a pipe or terminal is written through a non-blocking
 * description of its own (LineWriter), unless it cannot be opened again
 * (another user's pipe, such as an init script's `logger`): then it gets
 * the flag itself, so a log reader that stops reading never holds up the
 * audio. A socket (journald) is written as it is.
 */
export function keepPaceOnStderr(): void {
  const kind = kindOf(2);
  if ((kind === "pipe" || kind === "terminal") && !opensAgain(2)) nonBlocking(2, undefined, "");
}

/**
 * --log-max-bytes: a log that is a file appended to (`2>>FILE`) is kept
 * under it (LineWriter.capAt); any other log (a pipe to `logger`, a file
 * opened without appending, where emptying it would leave the writes where
 * they were) is told not to be. A turn that lost lines says so at every
 * turn, never held back: the emptied file's first line. `setAt`: where
 * the setting came from when not from its flag ("from environment X").
 */
export function capStderr(maxBytes: number, logger: Logger, setAt = ""): void {
  const file = appendedFile(2);
  if ("not" in file) return logger.log("agent", "warn", `--log-max-bytes${setAt ? ` (${setAt})` : ""}: the log (stderr) is ${file.not}; it is not rotated`);
  stderrLines().capAt(maxBytes, (why) => logger.unheld("agent", "warn", why));
}

/**
 * Stdout made non-blocking when it is a pipe or a socket (to a player), and
 * which; undefined when it is anything else (a file, a terminal), shares its
 * pipe with stderr (`2>&1`: the log's lines would then be the ones that wait,
 * and be lost), or cannot be made so; stdout is then written as a file is,
 * keeping its reader's pace (keepPaceOnStdout). Its flags are put back at
 * exit, for whoever shares the pipe after the agent.
 */
export function liveStdout(report: Report): "pipe" | "socket" | undefined {
  const kind = kindOf(1);
  if (kind === undefined || kind === "terminal") return undefined;
  if (stderrSharesStdout()) {
    report("warn", `stderr shares stdout's ${kind}: stdout is written as a file is, every frame kept; a stalled player holds up the input channel, and the log's lines`);
    keepPaceOnStdout(report);
    return undefined;
  }
  return nonBlocking(1, report, "a stalled player may hold up both channels") ? kind : undefined;
}
