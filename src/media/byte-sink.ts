import { closeSync, constants, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readSync, statSync, writeSync } from "node:fs";
import type { FilePlacement } from "../io/file-placement.ts";
import { ownNonBlockingDescription } from "../io/own-description.ts";
import { PassingShortage } from "../io/passing-errno.ts";
import { takeBack, writeFrom, writeFromOffLoop } from "../io/write-from.ts";
import { appendFlag, FileFormatError } from "./file-format.ts";
import type { SinkReport } from "./frame-sink.ts";
import { SinkFileWatch } from "./sink-file-watch.ts";
import { openForWriting, sinkFollowFlag } from "./sink-path.ts";

/**
 * Where a sink's bytes go: a file or stdout (ByteSink), or the reader of a
 * FIFO (FifoSink). `frames` is how many OpusFrames the bytes carry, for an
 * output that may drop them and counts what it drops; `write` says whether
 * it took them (false: dropped whole, none of them written). `kept` marks
 * bytes the reader's stream cannot do without (KeptUnit): an output that
 * drops what its reader has no room for holds these instead, ahead of what
 * comes after. `opening` marks bytes a file may not end with (an Ogg
 * stream's header pages, and its audio pages until one passes its pre-skip:
 * a link that plays nothing makes opusdec refuse the whole file): a file cut
 * short by a failed write loses them too, their frames counted as dropped.
 */
export interface ByteOutput {
  readonly name: string;
  /** The OpusFrames it dropped itself, by reason (a stream over it adds them to its own). */
  readonly dropped?: Readonly<Record<string, number>>;
  write(bytes: Uint8Array, frames: number, kept?: KeptUnit, opening?: boolean): boolean;
  flush(): void;
  close(): void | Promise<void>;
  /** While it holds what its reader has not taken yet (ByteSink.waiting). */
  readonly waiting?: Promise<void>;
  /** A regular file's: where it stands against its path (FrameSink.filePlacement). */
  filePlacement?(): FilePlacement | undefined;
  /** It goes on from a recording already there (a file appended to that keeps bytes): a stream that got no audio adds nothing to it. */
  readonly continues?: boolean;
}

/**
 * A unit its reader's stream cannot do without (ByteOutput.write): one that
 * `begins` a stream (an Ogg stream's OpusHead page, a wire Config), or one
 * that `completes` a stream begun (its OpusTags page, its end-of-stream
 * page). An output may still refuse a stream's beginning, bounding what
 * waits for a reader that takes nothing; it then refuses the rest of that
 * stream too, which the stream begins again (its head, its Config) until one
 * is taken, so that its reader never gets audio without the head before it.
 */
export type KeptUnit = "begins" | "completes";

/**
 * Why a ByteSink dropped OpusFrames: its reader left (EPIPE), the write failed
 * otherwise (ENOSPC, EIO), or at close its reader had not read for LINGER_MS.
 */
export type ByteSinkDrop = "sink_no_reader" | "sink_write_failed" | "sink_reader_slow";

/** The smallest unit usually written (a wire message with an empty payload; an Ogg page is larger): room for this many per buffer is kept. */
const SMALLEST_UNIT = 17;
/** While a pipe's reader has not taken what it holds, how often the rest is offered again (ms). */
export const RETRY_MS = 10;
/** How long a closing sink waits on a reader that is not reading (ms). */
export const LINGER_MS = 1000;

/**
 * A buffered byte writer over a file, stdout ("-") or a pipe, that keeps
 * the reader's pace: a slow sink slows the reading of the socket
 * (backpressure) instead of piling up memory or dropping frames. A file is
 * written synchronously, or (`offLoop`) in the thread pool: a disk that stops
 * taking writes (a frozen file system, a card stalled in its write) then holds
 * a thread of the pool, not the event loop and with it, in `serve`, the other
 * channel; `waiting` tells the caller to stop reading while the buffer is
 * past its size. A pipe (a FIFO, stdout to a player or `cat`) is
 * written non-blocking: what its full pipe does not take waits in the buffer,
 * offered again every RETRY_MS, and `waiting` tells the caller to stop
 * reading until it is taken, while the process stays free to act on a signal.
 * At close a reader that keeps reading gets the rest; one that takes nothing
 * for LINGER_MS has it counted as dropped (sink_reader_slow). A failed write ends the
 * run: raised by it and by every flush or close after it (one called where
 * the error cannot end the run still leaves it failed). The frames it could
 * not write whole, and every frame given after it, are counted as dropped (a
 * reader gone: sink_no_reader; otherwise sink_write_failed), so that each
 * frame received is written or counted. A file cut short by a failed write
 * (ENOSPC) is trimmed back to its last whole unit (a wire message, an Ogg
 * page) that is not `opening` (ByteOutput), so that it stays readable and can
 * be appended to; the frames of the opening units taken off are counted too.
 */
export class ByteSink implements ByteOutput {
  private buffer = new Uint8Array(0);
  private used = 0;
  /** The buffered units (each write's bytes: a message, a page): where each ends, and the frames buffered up to its end. */
  private unitEnds = new Uint32Array(0);
  private framesThrough = new Uint32Array(0);
  /** Per buffered unit, 1 for one a file may not end with (ByteOutput.write's `opening`). */
  private unitOpens = new Uint8Array(0);
  private units = 0;
  /** Bytes written whole since the end of the last unit that is not `opening`: a failed write takes them back off. */
  private openingBytes = 0;
  /** The frames those bytes carry: counted as dropped once taken back off. */
  private openingFrames = 0;
  private readonly counts: Record<ByteSinkDrop, number> = { sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 };
  /** Set by the first failed write: nothing is written after it. */
  private failedFor: ByteSinkDrop | undefined;
  private failure: Error | undefined;
  private closed = false;
  /** While the pipe's reader has not taken what the buffer holds: settles once it has, or rejects when writing fails. */
  private held: PromiseWithResolvers<void> | undefined;
  private retry: ReturnType<typeof setTimeout> | undefined;
  bytesWritten = 0;
  /** A file appended to that keeps bytes (what is whole of them): ByteOutput.continues. */
  continues = false;
  /** A regular file written in the thread pool (open's `offLoop`): told of a write that fails there. */
  private offLoop: ((failure: Error) => void) | undefined;
  /** While a write in the thread pool has not ended: settles when it has, rejects when it failed. */
  private writing: PromiseWithResolvers<void> | undefined;
  /** A flush asked for while a write was under way: the next write follows it. */
  private again = false;

  private constructor(
    readonly name: string,
    private readonly fd: number,
    private readonly ownsFd: boolean,
    private readonly capacity: number,
    /** A regular file: one cut short by a failed write is trimmed back to its last whole unit. */
    private readonly trimmable = false,
    /** A regular file's look at its path (removed, moved away, replaced). */
    private readonly watch?: SinkFileWatch,
  ) {
    this.allocate(capacity);
  }

  /**
   * "-" is stdout; anything else is created, or truncated (`append`: added
   * to, as `>>` does). A pipe (stdout's too) is written through a
   * description of its own opened non-blocking, so the flag reaches no one
   * else who shares it. A regular file is looked at against its path
   * (SinkFileWatch), what is found told on `report`; given `offLoop`, it is
   * written in the thread pool, and a write that fails there is told to
   * `offLoop` once found, since no flush or close may come to raise it (a
   * session ended, no frame after it).
   */
  static open(
    path: string,
    {
      capacity = 64 * 1024,
      append = false,
      whole,
      report,
      offLoop,
    }: { capacity?: number; append?: boolean; whole?: WholeLength; report?: SinkReport; offLoop?: (failure: Error) => void } = {},
  ): ByteSink {
    if (path === "-") {
      const own = ownNonBlockingDescription(1);
      return new ByteSink("stdout", own ?? 1, own !== undefined, capacity);
    }
    const fd = openForWriting(path, append);
    if (append && whole) {
      try {
        keepWhole(path, fd, whole);
      } catch (e) {
        closeSync(fd);
        throw e;
      }
    }
    const own = ownNonBlockingDescription(fd);
    if (own === undefined) {
      const stat = fstatSync(fd);
      const file = stat.isFile();
      const sink = new ByteSink(path, fd, true, capacity, file, file ? new SinkFileWatch(path, fd, report) : undefined);
      sink.continues = append && file && stat.size > 0;
      if (file) sink.offLoop = offLoop;
      return sink;
    }
    closeSync(fd);
    return new ByteSink(path, own, true, capacity);
  }

  /** Writes through `fd`, already open on `path` for writing (a FIFO's: non-blocking); closed with the sink. */
  static adopt(path: string, fd: number, capacity = 64 * 1024): ByteSink {
    return new ByteSink(path, fd, true, capacity);
  }

  get dropped(): Readonly<Record<string, number>> {
    return this.counts;
  }

  /** A regular file's: where it stands against its path, looked at no more than once every SINK_LOOK_MS; undefined for anything else. */
  filePlacement(): FilePlacement | undefined {
    return this.watch?.look();
  }

  /**
   * While the pipe's reader has not taken what the sink holds: settles once
   * it has (rejects if writing fails meanwhile). Stop reading until then:
   * what is written meanwhile is held in memory. Undefined otherwise.
   */
  get waiting(): Promise<void> | undefined {
    return this.held?.promise;
  }

  /** Takes them (a slow file or reader slows the writer instead), unless a write has failed: then they are dropped. */
  write(bytes: Uint8Array, frames = 0, _kept?: KeptUnit, opening = false): boolean {
    if (this.failedFor) {
      this.counts[this.failedFor] += frames;
      return false;
    }
    if (!this.fits(bytes.length)) {
      if (!this.held) {
        try {
          this.flush();
        } catch (e) {
          this.counts[this.failedFor!] += frames;
          throw e;
        }
      }
      if (!this.fits(bytes.length)) {
        // A reader that is behind, or a unit larger than the buffer (written now): held all the same, in a larger one.
        this.grow(this.used + bytes.length);
        this.append(bytes, frames, opening);
        // A file's write still under way: the caller stops reading until it has ended (a disk that stopped).
        if (this.writing) this.hold();
        else if (!this.held) this.flush();
        return true;
      }
    }
    this.append(bytes, frames, opening);
    return true;
  }

  private append(bytes: Uint8Array, frames: number, opening: boolean): void {
    this.buffer.set(bytes, this.used);
    this.used += bytes.length;
    if (this.units === this.unitEnds.length) this.allocateUnits(2 * this.units);
    const i = this.units++;
    this.unitEnds[i] = this.used;
    this.framesThrough[i] = this.framesIn(i) + frames;
    this.unitOpens[i] = opening ? 1 : 0;
  }

  /**
   * Hands buffered bytes to the kernel, as many as a pipe takes now (the rest
   * is offered again every RETRY_MS). Throws (e.g. ENOSPC on /dev/full) with
   * the sink named, and again once failed.
   */
  flush(): void {
    if (this.failure) throw this.failure;
    if (this.writing) {
      this.again = true;
      return;
    }
    if (this.used === 0) return;
    if (this.offLoop) return this.writeOffLoop();
    const { at, code } = writeFrom(this.fd, this.buffer, 0, this.used);
    this.wrote(at, code);
  }

  /**
   * Writes what the buffer holds in the thread pool, all of it (a signal's
   * EINTR, a short write: the rest again), then settles it as flush does;
   * meanwhile more is buffered after it. A flush asked for meanwhile is
   * made once it ends, a write of its own; a failure rejects `writing` and a
   * holder's wait, is told to `offLoop`, and is raised by the next flush or
   * close.
   */
  private writeOffLoop(): void {
    const writing = (this.writing = Promise.withResolvers<void>());
    writing.promise.catch(() => {});
    writeFromOffLoop(this.fd, this.buffer, 0, this.used, (at, code) => {
      this.writing = undefined;
      try {
        this.wrote(at, code);
        // A flush asked for meanwhile, or a buffer still past its size (its caller waiting), is written next.
        if (this.again || this.used > this.capacity) {
          this.again = false;
          this.flush();
        }
      } catch (e) {
        writing.reject(e);
        this.caughtUp(e as Error);
        // The run ends now: nothing else may call on the sink again (a session ended, a sender gone silent).
        this.offLoop?.(e as Error);
        return;
      }
      // The caller reads on once what the buffer holds is within its size: a flood holds no more than that.
      if (this.used <= this.capacity) this.caughtUp();
      writing.resolve();
    });
  }

  /** What a write of the buffer's first `at` bytes did: `code`, the errno that stopped it short. */
  private wrote(at: number, code: string | undefined): void {
    this.bytesWritten += at;
    // The units written whole reached the kernel; the rest stay buffered, or with a failure their frames are lost.
    let whole = 0;
    while (whole < this.units && this.unitEnds[whole]! <= at) whole++;
    this.wroteWhole(whole);
    if (code === undefined || code === "EAGAIN") {
      this.forget(at, whole);
      if (code === "EAGAIN") this.holdOn();
      // Written in the thread pool, its caller is let go once the buffer is within its size (writeOffLoop).
      else if (!this.offLoop) this.caughtUp();
      return;
    }
    let lost = this.framesIn(this.units) - this.framesIn(whole);
    // The start of the unit cut short, and the opening units before it (a stream's headers, and audio none of which plays).
    if (this.takeBack(at - (whole > 0 ? this.unitEnds[whole - 1]! : 0) + this.openingBytes)) lost += this.openingFrames;
    this.forget(this.used, this.units);
    this.fail(code, lost);
  }

  /** Counts into openingBytes and openingFrames the first `whole` buffered units, just written whole. */
  private wroteWhole(whole: number): void {
    if (whole === 0) return;
    let last = whole - 1;
    while (last >= 0 && this.unitOpens[last] === 1) last--;
    const end = this.unitEnds[whole - 1]!;
    const frames = this.framesIn(whole);
    if (last < 0) {
      this.openingBytes += end;
      this.openingFrames += frames;
    } else {
      this.openingBytes = end - this.unitEnds[last]!;
      this.openingFrames = frames - this.framesIn(last + 1);
    }
  }

  /** A file's last `bytes`, written before a failed write stopped it, are taken off again (best effort): whether they were. */
  private takeBack(bytes: number): boolean {
    // Left as it is where they cannot be: the failure that stopped the write is the one told.
    return this.trimmable && bytes > 0 && takeBack(this.fd, bytes);
  }

  /**
   * Writes out the rest and closes: a pipe's reader that takes none of it for
   * LINGER_MS has it counted as dropped (sink_reader_slow). Settles once the
   * descriptor is closed, its bytes synced first off the event loop.
   */
  close(): void | Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Looked at a last time while its descriptor is open: a file gone since the last look is told too.
    this.watch?.end();
    try {
      this.flush();
    } catch (e) {
      this.releaseNow();
      throw e;
    }
    if (this.writing) return this.written();
    if (!this.held) return this.release();
    return this.linger();
  }

  /** Closes once the writes under way in the thread pool have ended: a file's bytes all written, or its failure raised. */
  private async written(): Promise<void> {
    try {
      // One that ends with more asked for (the close's own flush) begins the next: each is waited for.
      while (this.writing) await this.writing.promise;
    } catch (e) {
      this.releaseNow();
      throw e;
    }
    return this.release();
  }

  /** Waits while the reader takes what is left; one that takes nothing for LINGER_MS has the rest counted. */
  private async linger(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      for (let before = -1; this.held && this.bytesWritten !== before; ) {
        before = this.bytesWritten;
        const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, LINGER_MS)));
        await Promise.race([this.held.promise, late]);
        clearTimeout(timer);
      }
    } finally {
      clearTimeout(timer);
      if (this.held && !this.failure) {
        this.counts.sink_reader_slow += this.framesIn(this.units);
        this.forget(this.used, this.units);
      }
      await this.release();
    }
  }

  /**
   * Stops offering what is held and closes the descriptor, a file's bytes
   * synced first in the thread pool: a sync that waits on a slow disk (seconds)
   * would otherwise hold the event loop, and with it, in `serve`, the other
   * channel's audio.
   */
  private async release(): Promise<void> {
    this.stopOffering();
    if (!this.ownsFd) return;
    // Best effort, its error not looked at: pipes and character devices refuse it.
    await new Promise<void>((resolve) => fsync(this.fd, () => resolve()));
    closeSync(this.fd);
  }

  /** As release, on the event loop: for a close that raises a failure, which ends the run (what was written is synced before it is told). */
  private releaseNow(): void {
    this.stopOffering();
    if (!this.ownsFd) return;
    try {
      fsyncSync(this.fd);
    } catch {
      // fsync is best effort: pipes and character devices refuse it
    }
    closeSync(this.fd);
  }

  private stopOffering(): void {
    clearTimeout(this.retry);
    this.retry = undefined;
    this.held?.resolve();
    this.held = undefined;
  }

  private fits(length: number): boolean {
    return length <= this.buffer.length - this.used;
  }

  /** The frames of the first `units` buffered units. */
  private framesIn(units: number): number {
    return units > 0 ? this.framesThrough[units - 1]! : 0;
  }

  /** Room for at least `bytes` (and a unit more): a backlog past the buffer's size lives only until it is written. */
  private grow(bytes: number): void {
    this.allocate(Math.max(bytes, 2 * this.buffer.length));
  }

  /** A buffer of `size` bytes, with room for its units (and a unit more; smaller ones get more room), holding what the one before held. */
  private allocate(size: number): void {
    const buffer = new Uint8Array(size);
    buffer.set(this.buffer.subarray(0, this.used));
    this.buffer = buffer;
    this.allocateUnits(Math.max(Math.ceil(size / SMALLEST_UNIT), this.units + 1));
  }

  /** Room for `most` units, holding the ones buffered. */
  private allocateUnits(most: number): void {
    const ends = new Uint32Array(most);
    ends.set(this.unitEnds.subarray(0, this.units));
    this.unitEnds = ends;
    const through = new Uint32Array(most);
    through.set(this.framesThrough.subarray(0, this.units));
    this.framesThrough = through;
    const opens = new Uint8Array(most);
    opens.set(this.unitOpens.subarray(0, this.units));
    this.unitOpens = opens;
  }

  /** Drops the first `bytes` from the buffer, and the first `units` (written whole) from its units. */
  private forget(bytes: number, units: number): void {
    if (bytes === this.used) {
      this.used = 0;
      this.units = 0;
      // A backlog's larger buffer is let go once it is written.
      if (this.buffer.length > this.capacity) this.allocate(this.capacity);
      return;
    }
    if (bytes === 0) return;
    this.buffer.copyWithin(0, bytes, this.used);
    this.used -= bytes;
    const framesBefore = this.framesIn(units);
    for (let i = units; i < this.units; i++) {
      this.unitEnds[i - units] = this.unitEnds[i]! - bytes;
      this.framesThrough[i - units] = this.framesThrough[i]! - framesBefore;
      this.unitOpens[i - units] = this.unitOpens[i]!;
    }
    this.units -= units;
    // So is one once what is left of it fits in the buffer's own size: filled again, it would only grow.
    if (this.buffer.length > this.capacity && this.used <= this.capacity) this.allocate(this.capacity);
  }

  /** The pipe is full: what it did not take is offered again, and the caller told to wait. */
  private holdOn(): void {
    this.hold();
    this.retry ??= setTimeout(this.offerAgain, RETRY_MS);
  }

  /** The caller is told to wait (`waiting`) until the buffer is taken. */
  private hold(): void {
    if (this.held) return;
    this.held = Promise.withResolvers<void>();
    // Rejected where no one waits (a flush between reads filled the pipe): the failure is raised by the next call anyway.
    this.held.promise.catch(() => {});
  }

  /** The caller may read on; with `failure`, its wait ends with it. */
  private caughtUp(failure?: Error): void {
    const held = this.held;
    this.held = undefined;
    if (failure) held?.reject(failure);
    else held?.resolve();
  }

  private readonly offerAgain = () => {
    this.retry = undefined;
    try {
      this.flush();
    } catch (e) {
      this.caughtUp(e as Error);
    }
  };

  /** The first failed write: `frames` it could not write, and everything after it, are dropped. */
  private fail(code: string, frames: number): never {
    this.failedFor = readerGone(code) ? "sink_no_reader" : "sink_write_failed";
    this.counts[this.failedFor] += frames;
    this.failure = new Error(`cannot write to sink ${this.name}: ${code}`);
    throw this.failure;
  }
}

/**
 * What of a file appended to is kept: its first `length` bytes, whole units
 * (messages, pages), with `endings` written over bytes of them in place, so
 * that what they hold ends as its format wants (an Ogg stream that its
 * writer, killed, left without an end-of-stream page gets one).
 */
export interface Kept {
  length: number;
  endings?: readonly Ending[];
}

/** Bytes written over a file's at `at`, in one write. */
export interface Ending {
  at: number;
  bytes: Uint8Array;
}

/**
 * What of a file is kept (Kept), read from `path` (the file open for
 * appending, by /proc/self/fd); undefined when it cannot tell (the bytes are
 * not of its format), and the file is left as it is.
 */
export type WholeLength = (path: string) => Kept | undefined;

/**
 * A file appended to that is longer is looked at from the first whole unit
 * in its last TAIL_BYTES, not from its start: what it ends with decides what
 * is cut, and a recording kept for days would otherwise be read whole at
 * every start, from a board's flash (256 KiB is about half a minute of 64
 * kbit/s audio, and four times the largest unit of either format).
 */
export const TAIL_BYTES = 256 * 1024;

/**
 * Where the whole units of the file at `path` end (a WholeLength), by
 * `measure`: `fd` read up to `end`, the end of its last whole unit, or
 * undefined when the bytes are not of its format. Measured to the file's end
 * first; failing there, up to where a tail of zero bytes begins, if there is
 * one: what a power loss leaves when the file's length reached the disk and
 * its last blocks did not. No unit of either format begins with a zero byte
 * (a magic, "OggS"), and a file whole to its end is never cut for the zeros
 * its last unit may end with.
 */
export function wholeLengthOf(path: string, measure: (fd: number, end: number) => Kept | undefined): Kept | undefined {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const whole = measure(fd, size);
    if (whole !== undefined) return whole;
    const data = dataEnd(fd, size);
    if (data === size) return undefined;
    return data === 0 ? { length: 0 } : measure(fd, data);
  } finally {
    closeSync(fd);
  }
}

/** Where the zero bytes that end the file's first `size` bytes begin: `size` when the last of them is not zero. */
export function dataEnd(fd: number, size: number): number {
  const chunk = new Uint8Array(64 * 1024);
  for (let end = size; end > 0; ) {
    const from = Math.max(0, end - chunk.length);
    if (readSync(fd, chunk, 0, end - from, from) !== end - from) return size;
    for (let i = end - from - 1; i >= 0; i--) if (chunk[i] !== 0) return from + i + 1;
    end = from;
  }
  return 0;
}

/**
 * A regular file appended to is cut back to its whole units first: one cut
 * short (the agent killed mid-write, the power lost) would otherwise have
 * what is appended follow part of a unit, where a reader that never
 * resynchronises (a wire capture's) stops for good. One that cannot be read
 * again (the agent may write it, not read it) is left as it is; one that
 * needs cutting and cannot be cut (append-only) is refused, left as it is.
 */
function keepWhole(path: string, fd: number, whole: WholeLength): void {
  const file = fstatSync(fd);
  if (!file.isFile() || file.size === 0) return;
  let kept: Kept | undefined;
  try {
    kept = whole(`/proc/self/fd/${fd}`);
  } catch (e) {
    // One it may write but not read (mode 0200, EACCES): it cannot tell, and adds to it as >> does.
    if ((e as NodeJS.ErrnoException)?.code === undefined) throw e;
    return;
  }
  if (kept === undefined) return;
  if (kept.length < file.size) {
    const cut = file.size - kept.length;
    try {
      ftruncateSync(fd, kept.length);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException)?.code;
      if (code === undefined) throw e;
      // Added to as it is, what is appended would follow the unit cut short, where a reader stops for good.
      const why = code === "EPERM" ? `${code}: the file is append-only, chattr +a` : code;
      throw new FileFormatError("sink", path, (flag, _setAt, appendSetAt) =>
        `sink ${path}: its last ${cut} bytes are no whole message or page, and ${appendFlag(flag, appendSetAt)} cannot cut them off (${why}): what it adds would follow them, where a reader stops; use another file`,
      );
    }
  }
  if (kept.endings?.length) writeOver(fd, kept.endings);
}

/**
 * Writes `endings` over the file `fd` appends to, each in one write: through
 * a description of its own, since every write through one open for
 * appending goes to the end, whatever its position. One that fails leaves
 * the file as it was there (an ending is what a reader goes on without).
 */
function writeOver(fd: number, endings: readonly Ending[]): void {
  let own: number | undefined;
  try {
    own = openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY);
    for (const { at, bytes } of endings) writeSync(own, bytes, 0, bytes.length, at);
  } catch (e) {
    if ((e as NodeJS.ErrnoException)?.code === undefined) throw e;
  } finally {
    if (own !== undefined) closeSync(own);
  }
}

/** A write's errno that says the reader has gone: EPIPE, or ECONNRESET from a socket's reader. */
export function readerGone(code: string): boolean {
  return code === "EPIPE" || code === "ECONNRESET";
}

/** While a FIFO sink has no reader, how often to look again (ms). */
const FIFO_READER_LOOK_MS = 200;

/**
 * Opening a FIFO to write blocks until a reader opens it, and no signal
 * handler runs meanwhile: a service waiting so could not be stopped. When
 * `path` is a FIFO, waits for a reader without blocking (`waiting` is called
 * once if there is none yet) and resolves with a descriptor open on it for
 * writing, non-blocking: the sink writes through it (SinkOptions.fd), since
 * opening the path again would wait anew if the reader had left meanwhile.
 * A FIFO removed meanwhile (a pipeline making it again) is waited for too:
 * opening the path then would create a regular file there. Undefined for
 * anything else (a FIFO replaced by something else while it waits too: the
 * sink then opens the path as a file, with its checks), or when `stopped()`
 * comes first. Another user's symbolic link at the path in a world-writable
 * sticky directory is refused (UnsafeSinkError), as the sink's open refuses it.
 * A look that finds no descriptor free (EMFILE, ENFILE) is made again at the
 * next, `failing` told once a shortage: a passing one neither ends the run
 * nor leaves the FIFO to the sink's own open, which waits for a reader.
 */
export async function holdFifoForWriting(path: string, stopped: () => boolean, waiting: () => void, failing: (code: string) => void): Promise<number | undefined> {
  if (path === "-") return undefined;
  sinkFollowFlag(path);
  if (!statSync(path, { throwIfNoEntry: false })?.isFIFO()) return undefined;
  const shortage = new PassingShortage(failing);
  for (let told = false; !stopped(); await Bun.sleep(FIFO_READER_LOOK_MS)) {
    try {
      // Another user's link there, made while it waits, is not followed: the sink's own open refuses it.
      const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK | sinkFollowFlag(path));
      // Something else there now (a FIFO replaced by a file or a symbolic link): the sink's own open decides.
      if (fstatSync(fd).isFIFO()) return fd;
      closeSync(fd);
      return undefined;
    } catch (e) {
      // ENXIO: no reader yet; ENOENT: no FIFO just now. Anything else the sink's own open reports.
      const code = (e as NodeJS.ErrnoException).code;
      if (shortage.met(code)) continue;
      shortage.over();
      if (code !== "ENXIO" && code !== "ENOENT") return undefined;
    }
    if (!told) waiting();
    told = true;
  }
  return undefined;
}
