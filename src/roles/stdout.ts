import { fstatSync } from "node:fs";
import type { Report } from "../transport/report.ts";
import { setNonBlocking } from "../transport/socket-options.ts";

/** What stdout is open on, when a sink may keep its reader's pace there: a pipe or a socket (to a player, a parent process). */
type StdoutKind = "pipe" | "socket";

/** A pipe or a socket (undefined: a file, a terminal, or no stdout), and whether stderr is the same one (`2>&1`). */
function stdoutKind(): { kind: StdoutKind | undefined; sharedWithStderr: boolean } {
  try {
    const out = fstatSync(1);
    const kind = out.isFIFO() ? "pipe" : out.isSocket() ? "socket" : undefined;
    const err = fstatSync(2);
    return { kind, sharedWithStderr: err.dev === out.dev && err.ino === out.ino };
  } catch {
    return { kind: undefined, sharedWithStderr: false };
  }
}

/**
 * Sets O_NONBLOCK on stdout, so that a reader who stops reading holds up the
 * sink (ByteSink.waiting), never the process inside write(). The flag belongs
 * to the open description, shared with whoever handed stdout down: it is put
 * back at exit. False, with `consequence` warned, when it cannot be set.
 */
function nonBlockingStdout(report: Report, consequence: string): boolean {
  const set = setNonBlocking(1);
  if (!set.ok) {
    report("warn", `cannot make stdout non-blocking; ${consequence}`, { error: set.message });
    return false;
  }
  process.on("exit", set.restore);
  return true;
}

/**
 * Stdout as the sink "-" of a role that keeps every frame (`output recv`,
 * `input serve` on its own). A pipe needs nothing here: ByteSink writes it
 * through a non-blocking description of its own. A socket (a parent that
 * spawned the agent with socketpair stdio, as libuv and socat do) cannot be
 * opened again, so its own flag is set.
 */
export function keepPaceOnStdout(report: Report): void {
  if (stdoutKind().kind === "socket") nonBlockingStdout(report, "a reader that stops reading holds up the process");
}

/**
 * Stdout made non-blocking when it is a pipe or a socket (to a player), and
 * which; undefined when it is anything else (a file, a terminal), shares its
 * pipe with stderr (`2>&1`: the log's lines would then be the ones that wait,
 * and be lost), or cannot be made so; stdout is then written as a file is,
 * keeping its reader's pace (keepPaceOnStdout). Its flags are put back at
 * exit, for whoever shares the pipe after the agent.
 */
export function liveStdout(report: Report): StdoutKind | undefined {
  const { kind, sharedWithStderr } = stdoutKind();
  if (!kind) return undefined;
  if (sharedWithStderr) {
    report("warn", `stderr shares stdout's ${kind}: stdout is written as a file is, every frame kept; a stalled player holds up the input channel, and the log's lines`);
    keepPaceOnStdout(report);
    return undefined;
  }
  return nonBlockingStdout(report, "a stalled player may hold up both channels") ? kind : undefined;
}
