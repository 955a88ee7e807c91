import { constants, copyFile, fstatSync, ftruncate, rename, statfsSync, unlink } from "node:fs";
import { basename, dirname, join } from "node:path";
import { appends } from "../io/appended-file.ts";
import { fileName } from "../io/file-placement.ts";
import { ownNonBlockingDescription } from "../io/own-description.ts";
import { takeBack, writeFrom, writeFromOffLoop } from "../io/write-from.ts";

/** What waits for a reader that is not reading, at most; lines beyond it are counted and lost. */
const BACKLOG_BYTES = 64 * 1024;
/** How often what waits is offered again: a reader back but slow takes a pipe-full each time. */
const RETRY_MS = 20;
/** At exit, how long a reader that is not reading is waited for. */
const DRAIN_MS = 1000;
/** Why lines lost to the backlog's bound were: a reader behind, or a disk (offLoop). */
const NOT_READING = "the log's reader was not reading";
const NOT_TAKING = "the log's disk was not taking writes";

/**
 * Writes log lines to a descriptor without ever waiting for its reader: the
 * agent's audio must not stop because whoever reads its log (a terminal, a
 * `logger` pipe, `| tee`) has stalled. What the descriptor cannot take now
 * waits, in order, in a bounded backlog offered again every RETRY_MS; a line
 * that would overflow the backlog is counted and lost, and once the reader
 * is back a notice says how many were. A line is never cut: one begun is
 * finished before the next. At exit the backlog gets DRAIN_MS.
 *
 * A write that fails (a full disk's ENOSPC, EIO, a reader gone: EPIPE) loses
 * its line, and what waits behind it, counted; what a file appended to took
 * of it is taken off again. The next line offered goes in one write with a
 * notice of how many were lost and why before it (on a line of its own where
 * half a line stayed), so a log on a disk that filled and then got room
 * again says where it has a gap, once: a notice is written only with a line
 * after it.
 *
 * Only a descriptor in non-blocking mode can refuse a write; on a blocking
 * one (a socket) this writes as writeSync does. A file (`offLoop`) is
 * written in the thread pool, a line at a time: a disk that stops taking
 * writes (frozen, a card stalled in its write) holds up a thread of the
 * pool, not the audio, and the lines meanwhile wait as for a reader not
 * reading. The run awaits `settled()` before it exits; a process that
 * exits at once writes what waits on the event loop, as at its last, once
 * the write under way has ended: if it has not in DRAIN_MS, what waits is
 * given up.
 */
export class LineWriter {
  /** The notice of lines lost, as a line of the log's format. */
  lostNotice: (count: number, why: string) => string = (count, why) => `audio-agent: ${count} log lines lost: ${why}`;
  /** What waits, in order: lines (or the rest of one begun), and runs of lines lost, told where they were lost. */
  private readonly pending: (Uint8Array | LostLines)[] = [];
  private pendingBytes = 0;
  private retry: ReturnType<typeof setInterval> | undefined;
  private drainAtExit = false;
  /** Set by retire(): nothing more is written. */
  private retired = false;
  /** Set by capAt(): the size the file written to is kept under, and who is told of a copy that failed. */
  private cap: Cap | undefined;
  /** Lines lost to writes that failed since the last told, and the last failure's errno name. */
  private failed: { count: number; code: string } | undefined;
  /** The log was last left mid-line: a line begun (its rest waiting), or the part of one a failed write left. */
  private midLine = false;
  /** While turnForRoom tries a line again: a second failure is counted, not turned for. */
  private turningForRoom = false;
  /** offLoop: what waits to be tried again after a turn for room, which may not turn the log again. */
  private triedAgain: Uint8Array | LostLines | undefined;
  /**
   * A write (offLoop) or a turn of the log under way in the thread pool,
   * which what follows waits for: whether it still is, as the file shows it
   * (at exit, when no callback comes).
   */
  private inFlight: (() => boolean) | undefined;
  /** offLoop: set as the process exits, when no thread-pool write would be waited for: written on the event loop. */
  private exiting = false;
  /** Who waits for settled(). */
  private settling: (() => void)[] = [];

  constructor(
    private readonly fd: number,
    private readonly limitBytes = BACKLOG_BYTES,
    private readonly offLoop = false,
  ) {
    if (offLoop) {
      this.drainAtExit = true;
      process.once("exit", () => {
        // No callback comes now: the write (or the turn's emptying) under way is looked for in the file's size, what waits written after it.
        this.exiting = true;
        const end = performance.now() + DRAIN_MS;
        const underWay = () => this.inFlight?.() === true;
        while (underWay() && performance.now() < end) Bun.sleepSync(1);
        // A disk that took nothing in DRAIN_MS: a write on the event loop would hold the exit (the socket file's removal) as long as it does.
        if (underWay()) return this.retire();
        this.inFlight = undefined;
        this.drain();
      });
    }
  }

  /** Lines waiting for the reader, and lines lost to the bound so far and not yet told. */
  get backlog(): { bytes: number; lost: number } {
    let lost = 0;
    for (const entry of this.pending) if (entry instanceof LostLines) lost += entry.count;
    return { bytes: this.pendingBytes, lost };
  }

  /** `always`: the line waits whatever the bound (a run's last, failure line), never lost to it. */
  write(text: string, always = false): void {
    if (this.retired) return;
    const line = Buffer.from(text);
    if (this.pending.length > 0 || this.inFlight) {
      if (always) this.keep(line);
      else this.hold(line);
      // The line a turn for room tries again (offLoop): it may not turn the log again.
      if (this.turningForRoom) this.triedAgain = line;
      return;
    }
    // Lines lost before: told with this line, in one write, or neither is written (and both counted lost).
    const told = this.failed;
    this.failed = undefined;
    const bytes = told ? Buffer.concat([this.failedNotice(told), line]) : line;
    const rest = this.writeNow(bytes, 1 + (told?.count ?? 0), this.turnsForRoom(!this.turningForRoom, () => this.write(text, always)));
    if (rest === undefined || rest === FAILED) return;
    // Begun (or a notice in it): its rest goes first whatever the bound, or the reader would see half a line.
    if (always || told || rest.length < bytes.length) this.keep(rest);
    else this.hold(rest);
  }

  /**
   * Offers the backlog to the reader until it is written or DRAIN_MS have
   * passed; what is left then is given up. Written in the thread pool
   * (offLoop), it follows the write under way: nothing is done here but as
   * the process exits.
   */
  drain(ms = DRAIN_MS): void {
    if (this.offLoop && !this.exiting) return;
    const end = performance.now() + ms;
    while (this.waiting() && !this.resume() && performance.now() < end) Bun.sleepSync(1);
    this.pending.length = 0;
    this.pendingBytes = 0;
    clearInterval(this.retry);
    this.retry = undefined;
  }

  /**
   * Keeps the file this writes to, which it appends to (appendedFile), under
   * `maxBytes`: the line that takes it there is the last before the file is
   * copied to its name with ".1" added (copyToOlder: the copy before, or a
   * link there, replaced, never written through) and emptied
   * (logrotate's copytruncate, between two lines, so none is cut, and none
   * lost while the copy is made: the lines meanwhile wait, as for a write
   * under way). The turn is made in the thread pool, so a copy of many
   * megabytes, or a disk that stops taking writes in the middle of it,
   * holds up no audio. Its steps follow one another through the event
   * loop, so as the process exits none is begun, and one under way goes
   * no further (what waits is given up unless it was the emptying): the
   * next run's first line turns it. A copy that fails,
   * or a file removed (no name to copy to), is emptied all the same, so it
   * stays under the bound, and `failed` is told why.
   */
  capAt(maxBytes: number, failed: (why: string) => void): void {
    this.cap = { maxBytes, failed };
  }

  /** Once nothing waits and no write or turn is under way (the run's last lines on the disk). */
  settled(): Promise<void> {
    if (!this.inFlight && !this.waiting()) return Promise.resolve();
    return new Promise((resolve) => this.settling.push(resolve));
  }

  /**
   * Writes nothing from now on, what waits given up: at exit, once the
   * descriptor's flags are put back to blocking, a write into a full pipe
   * would hold the process for good.
   */
  retire(): void {
    this.retired = true;
    this.pending.length = 0;
    this.pendingBytes = 0;
  }

  private waiting(): boolean {
    return this.pending.length > 0;
  }

  private hold(bytes: Uint8Array): void {
    if (this.pendingBytes + bytes.length <= this.limitBytes) this.keep(bytes);
    else {
      const last = this.pending.at(-1);
      if (last instanceof LostLines) last.count++;
      else this.pending.push(new LostLines());
    }
    this.retryLater();
  }

  private keep(bytes: Uint8Array): void {
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    this.retryLater();
  }

  private retryLater(): void {
    if (!this.drainAtExit) {
      this.drainAtExit = true;
      // A process that exits at once (a second signal) still offers its last lines.
      process.once("exit", () => this.drain());
    }
    // Written in the thread pool, what waits follows each write as it ends.
    if (this.retry || this.offLoop) return;
    this.retry = setInterval(() => this.resume(), RETRY_MS);
    this.retry.unref();
  }

  /**
   * Writes what waits, each run of lost lines as a notice where they were
   * lost; true once nothing waits. A write that fails loses what waits
   * behind it too, counted: the notice of the failure must come before any
   * line after it.
   */
  private resume(): boolean {
    while (this.pending.length > 0 && !this.inFlight) {
      const head = this.pending.shift()!;
      const lost = head instanceof LostLines;
      const bytes = lost ? Buffer.from(this.lostNotice(head.count, this.offLoop ? NOT_TAKING : NOT_READING) + "\n") : head;
      if (!lost) this.pendingBytes -= head.length;
      const again = () => {
        this.pending.unshift(head);
        if (!lost) this.pendingBytes += head.length;
        this.triedAgain = head;
      };
      const lines = lost ? head.count : 1;
      const rest = this.writeNow(bytes, lines, this.turnsForRoom(head !== this.triedAgain, again, lines));
      // Lost, and all behind it; or the log turned for room, and it is offered again first.
      if (rest === FAILED) continue;
      if (rest !== undefined) {
        // A notice not begun stays a count, which lines lost after it still join.
        const back = lost && rest.length === bytes.length ? head : rest;
        this.pending.unshift(back);
        if (!(back instanceof LostLines)) this.pendingBytes += back.length;
        return false;
      }
    }
    // Written in the thread pool: the rest follows the write under way.
    if (this.inFlight) return false;
    clearInterval(this.retry);
    this.retry = undefined;
    return true;
  }

  /**
   * Writes what the descriptor takes now, which ends a line: returns what it
   * did not take, undefined when all went, or FAILED: then the `lines` it
   * held are lost, counted (failedAt), and what waits behind them too,
   * unless `turned` says the log was turned for room (turnForRoom). In the
   * thread pool (offLoop) it returns undefined at once, as if all went, and
   * what the write did is settled as it ends.
   */
  private writeNow(bytes: Uint8Array, lines = 1, turned?: () => boolean): Uint8Array | undefined | typeof FAILED {
    const wasMidLine = this.midLine;
    // The cap as it is now: a line written uncapped (a turn's notice) turns nothing as it ends.
    const cap = this.cap;
    if (this.offLoop && !this.exiting) {
      const end = fileSize(this.fd) + bytes.length;
      this.inFlight = () => fileSize(this.fd) < end;
      writeFromOffLoop(this.fd, bytes, 0, bytes.length, (at, code) => {
        this.inFlight = undefined;
        if (this.exiting) return;
        // A file never refuses a write for now (EAGAIN): what it did not take is lost, as at a failure.
        this.wrote(bytes, at, code === "EAGAIN" ? "EIO" : code, lines, wasMidLine, cap, turned);
        this.followOn();
      });
      return undefined;
    }
    const { at, code } = writeFrom(this.fd, bytes);
    return this.wrote(bytes, at, code, lines, wasMidLine, cap, turned);
  }

  /** What a write of `bytes` that got as far as `at`, stopped short by `code` (an errno name), leaves: see writeNow. */
  private wrote(bytes: Uint8Array, at: number, code: string | undefined, lines: number, wasMidLine: boolean, cap: Cap | undefined, turned?: () => boolean): Uint8Array | undefined | typeof FAILED {
    if (at > 0) this.midLine = at < bytes.length;
    if (code === "EAGAIN") return bytes.subarray(at);
    if (code !== undefined) {
      this.failedAt(code, at, lines, wasMidLine);
      if (turned?.()) return FAILED;
      // The notice of the failure must come before any line after it: those waiting are lost too.
      for (const entry of this.pending) this.failed!.count += entry instanceof LostLines ? entry.count : 1;
      this.pending.length = 0;
      this.pendingBytes = 0;
      return FAILED;
    }
    // At a line's end only: a file is written whole, each line at once.
    if (cap && this.cap && bytes.at(-1) === 10) this.turn(this.cap);
    return undefined;
  }

  /** Once a write or a turn in the thread pool has ended: what waits follows, and settled() is told once nothing is left. */
  private followOn(): void {
    this.resume();
    if (!this.inFlight && !this.waiting()) for (const settled of this.settling.splice(0)) settled();
  }

  /** The notice of lines lost to failed writes, on a line of its own. */
  private failedNotice({ count, code }: { count: number; code: string }): Uint8Array {
    return Buffer.from(`${this.midLine ? "\n" : ""}${this.lostNotice(count, `writing the log failed (${code})`)}\n`);
  }

  /**
   * A write that failed (`code`) once `at` bytes had gone: its `lines` are
   * lost, counted. What of it a file took is taken off again where it can
   * be, which leaves the log as it was before; else it is left mid-line.
   */
  private failedAt(code: string, at: number, lines: number, wasMidLine: boolean): void {
    this.failed ??= { count: 0, code };
    this.failed.count += lines;
    this.failed.code = code;
    if (at > 0 && takeBackLine(this.fd, at)) this.midLine = wasMidLine;
  }

  /** What tells writeNow whether a write that failed turned the log for room (turnForRoom), when it `may`; `lines`: those offered again. */
  private turnsForRoom(may: boolean, again: () => void, lines = 1): () => boolean {
    return () => may && this.cap !== undefined && OUT_OF_ROOM.has(this.failed!.code) && this.turnForRoom(this.cap, again, lines);
  }

  /**
   * A log kept under a size (capAt) whose write found no room (its disk
   * full below the cap: a small /var/log; past `ulimit -f`): turned now,
   * copied to ".1" if there is room for it (the ".1" before is removed
   * first, which may make it) and emptied, and what failed (`lines` of
   * it) offered `again` once: the newest lines kept rather than the
   * oldest, and the line that says why a run ended written; what waited
   * behind it (offLoop) follows. Whether it was turned: nothing to empty,
   * nothing is done.
   */
  private turnForRoom(cap: Cap, again: () => void, lines: number): boolean {
    try {
      if (fstatSync(this.fd).size === 0) return false;
    } catch {
      return false;
    }
    if (!this.turn(cap, again)) return false;
    // Tried again: not lost unless it fails again.
    if ((this.failed!.count -= lines) <= 0) this.failed = undefined;
    return true;
  }

  /** Runs `write` with no turn at the cap meanwhile. */
  private uncapped(write: () => void): void {
    const cap = this.cap;
    this.cap = undefined;
    try {
      write();
    } finally {
      this.cap ??= cap;
    }
  }

  /**
   * Copies the file to its ".1" and empties it, in the thread pool, once it
   * has reached the cap (see capAt), or now when `again` is given (a turn
   * for room: turnForRoom, `again` offering what failed once the turn's
   * notice is written). Whether a turn was begun.
   */
  private turn(cap: Cap, again?: () => void): boolean {
    const forRoom = again !== undefined;
    let size: number;
    try {
      // Its size, not what this wrote: stdout may share the file (2>&1).
      size = fstatSync(this.fd).size;
    } catch (e) {
      this.refused(cap, e);
      return false;
    }
    // As the process exits no callback comes: the next run's first line turns it.
    if ((size < cap.maxBytes && !forRoom) || this.exiting) return false;
    let path: string | undefined;
    try {
      path = fileName(this.fd);
    } catch (e) {
      this.refused(cap, e);
      return false;
    }
    // Under way until the file is emptied: what is written meanwhile waits (and at exit, for that).
    this.inFlight = () => fileSize(this.fd) >= size;
    copiedAndEmptied(this.fd, path, !forRoom && path !== undefined && roomFor(path, 2 * size)).then(({ lost, error }) => {
      this.inFlight = undefined;
      if (this.exiting) return;
      let why = lost;
      if (error !== undefined) this.refused(cap, error);
      else if (forRoom && lost === undefined) why = `no room for the log's next line: copied to ${path}.1 and emptied at ${size} bytes, below its bound of ${cap.maxBytes}`;
      else if (forRoom) why = `no room for the log's next line, so it is emptied at ${size} bytes, below its bound of ${cap.maxBytes}; ${lost}`;
      // Set aside: the turn's notice is the emptied file's first line, what failed (for room) its next, and what waited follows.
      const waiting = this.pending.splice(0);
      const waitingBytes = this.pendingBytes;
      this.pendingBytes = 0;
      this.turningForRoom = forRoom;
      try {
        // That line alone (a path thousands of bytes long) never turns it again.
        if (error === undefined && why !== undefined) this.uncapped(() => cap.failed(why));
        again?.();
      } finally {
        this.turningForRoom = false;
        this.pending.push(...waiting);
        this.pendingBytes += waitingBytes;
      }
      this.followOn();
    });
    return true;
  }

  /** The descriptor itself refuses (`e`): nothing to turn, ever. */
  private refused(cap: Cap, e: unknown): void {
    this.cap = undefined;
    cap.failed(`the log is not rotated from now on: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * A line's part a file took before its write failed, taken off again (takeBack);
 * whether it was. Only a file appended to (2>>FILE): one written at its own
 * offset (2>FILE) would go on writing there, past a gap of zero bytes.
 */
function takeBackLine(fd: number, bytes: number): boolean {
  let size: number;
  try {
    const file = fstatSync(fd);
    if (!file.isFile() || !appends(fd)) return false;
    size = file.size;
  } catch {
    return false;
  }
  // Emptied meanwhile (a turn, stdout's 2>&1 writer): what is left goes.
  return takeBack(fd, Math.min(bytes, size));
}

/**
 * The log `fd` copied to its ".1" (copyToOlder, when it has a `path` left)
 * and emptied, in the thread pool: `lost` says why the lines before are
 * lost, when they are (no copy); `error`, that the descriptor itself
 * refuses to be emptied.
 */
async function copiedAndEmptied(fd: number, path: string | undefined, roomy: boolean): Promise<{ lost?: string; error?: unknown }> {
  let lost: string | undefined;
  // Removed, it still fills the disk until the agent exits: emptied all the same.
  if (path === undefined) lost = "the log file has no name left (removed), so no copy is made: the lines before this one are lost";
  else {
    try {
      await copyToOlder(`/proc/self/fd/${fd}`, path, roomy);
    } catch (e) {
      lost = `cannot copy the log to ${path}.1 (${(e as NodeJS.ErrnoException).code ?? e}): the lines before this one are lost`;
    }
  }
  try {
    await inPool((done) => ftruncate(fd, 0, done));
  } catch (error) {
    return { error };
  }
  return { lost };
}

/**
 * Copies `from` (through the descriptor: the file written to, whatever is at
 * its name now) to a new file at `path`.1, which replaces the one before (or
 * a link there, to a file elsewhere or to this one: never written through).
 * The copy is made under a hidden name and renamed over it, so a reader
 * (`tail -F`, a log shipper) finds the old copy or the new one, whole, never
 * part of one, not even as the process exits at once mid-copy. When not
 * `roomy`, the old one is removed first (a reader may then find none).
 * Where the hidden name fails for want of room, so would `path`.1; for
 * anything else (a name too long, a directory at the hidden name), the old
 * one is removed and the copy made at its name, whose failure is the one thrown.
 */
async function copyToOlder(from: string, path: string, roomy: boolean): Promise<void> {
  const older = `${path}.1`;
  const aside = join(dirname(path), `.${basename(path)}.1.new`);
  // Left by an agent that ended mid-copy (its room wanted most on a full disk), or another's file: only its name is taken away.
  const asideFree = await removedIfThere(aside);
  if (!roomy) await removeIfThere(older);
  if (asideFree) {
    const failed = await copiedAside(from, aside, older);
    if (failed === undefined) return;
    // No room at the hidden name, the one before already gone: none at its name either.
    if (!roomy && OUT_OF_ROOM.has((failed as NodeJS.ErrnoException).code ?? "")) throw failed;
  }
  await removeIfThere(older);
  await copyWhole(from, older);
}

/**
 * Whether the file system of `path` has `bytes` free: a copy beside the one
 * before may take half, so a turn never fills a disk it shares (a small
 * /var/log, where syslogd and the rest would lose lines meanwhile).
 */
function roomFor(path: string, bytes: number): boolean {
  try {
    const disk = statfsSync(dirname(path));
    return disk.bavail * disk.bsize >= bytes;
  } catch {
    return false;
  }
}

/** `from` copied to the free name `aside` and that renamed to `to`: undefined once done, else why not (no copy is left at `aside`). */
async function copiedAside(from: string, aside: string, to: string): Promise<unknown> {
  try {
    await copyWhole(from, aside);
  } catch (e) {
    return e;
  }
  try {
    await inPool((done) => rename(aside, to, done));
    return undefined;
  } catch (e) {
    await removedIfThere(aside);
    return e;
  }
}

/**
 * Copies `from` to a new file `to`; one that fails part-way (no room) is
 * removed again: it would hold part of the log, its last line cut (or a run
 * of zero bytes where the copy stopped), and keep the room it took.
 */
async function copyWhole(from: string, to: string): Promise<void> {
  try {
    await inPool((done) => copyFile(from, to, constants.COPYFILE_EXCL, done));
  } catch (e) {
    // EEXIST: another's file, made since the name was removed; never this copy.
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") await removedIfThere(to);
    throw e;
  }
}

/** Whether nothing is left at `path` (see removeIfThere): a directory, or another's file in a sticky directory, stays. */
async function removedIfThere(path: string): Promise<boolean> {
  try {
    await removeIfThere(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes the name `path` (a directory stays, EISDIR); nothing there is no failure. */
async function removeIfThere(path: string): Promise<void> {
  try {
    await inPool((done) => unlink(path, done));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** A node:fs call in its callback form, made in the thread pool, as a promise. */
function inPool(call: (done: (error: NodeJS.ErrnoException | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => call((error) => (error ? reject(error) : resolve())));
}

/** A write's errno names for want of room: a full disk, a quota, a file size limit. */
const OUT_OF_ROOM = new Set(["ENOSPC", "EDQUOT", "EFBIG"]);

/** The size a log file is kept under (capAt), and who is told of a copy that failed. */
interface Cap {
  maxBytes: number;
  failed: (why: string) => void;
}

/** What writeNow returns for a write that failed. */
const FAILED = Symbol("failed");

/** Lines lost in a row while the backlog was full. */
class LostLines {
  count = 1;
}

let stderr: LineWriter | undefined;

/**
 * The process's stderr as a LineWriter. A pipe (a `logger` or `tee` reading
 * it, a parent process) or a terminal (stopped by Ctrl-S) is written through
 * a description of its own, opened non-blocking, so the flag reaches no one
 * else who shares it; a file or a socket (journald) is written as it is.
 */
export function stderrLines(): LineWriter {
  if (stderr) return stderr;
  const pipe = ownNonBlockingDescription(2);
  return (stderr = pipe === undefined ? new LineWriter(2, BACKLOG_BYTES, isFile(2)) : new LineWriter(pipe));
}

/** The size of the file `fd` is open on; 0 when it cannot be told. */
function fileSize(fd: number): number {
  try {
    return fstatSync(fd).size;
  } catch {
    return 0;
  }
}

/** Whether `fd` is open on a regular file (a log opened with 2>> or 2>): written in the thread pool. */
function isFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
  }
}
