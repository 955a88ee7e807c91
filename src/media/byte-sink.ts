import { closeSync, constants, fsyncSync, openSync, statSync, writeSync } from "node:fs";

/**
 * Where a sink's bytes go: a file or stdout (ByteSink), or the reader of a
 * FIFO (FifoSink). `frames` is how many OpusFrames the bytes carry, for an
 * output that may drop them and counts what it drops; `write` says whether
 * it took them (false: dropped whole, none of them written).
 */
export interface ByteOutput {
  readonly name: string;
  /** The OpusFrames it dropped itself, by reason (a stream over it adds them to its own). */
  readonly dropped?: Readonly<Record<string, number>>;
  write(bytes: Uint8Array, frames: number): boolean;
  flush(): void;
  close(): void;
}

/** Why a ByteSink dropped OpusFrames: its reader left (EPIPE), or the write failed otherwise (ENOSPC, EIO). */
export type ByteSinkDrop = "sink_no_reader" | "sink_write_failed";

/** The smallest unit that usually carries a frame (a wire message with an empty payload): room for this many per buffer is kept. */
const SMALLEST_FRAME_UNIT = 17;

/**
 * A buffered, synchronous byte writer over a file or stdout ("-").
 * Synchronous on purpose: a slow sink then slows the reader of the socket
 * (backpressure) instead of piling up memory. A failed write ends the run:
 * raised by it and by every flush or close after it (one called where the
 * error cannot end the run still leaves it failed). The frames it could not
 * write whole, and every frame given after it, are counted as dropped (a
 * reader gone: sink_no_reader; otherwise sink_write_failed), so that each
 * frame received is written or counted.
 */
export class ByteSink implements ByteOutput {
  private readonly buffer: Uint8Array;
  private used = 0;
  /** The buffered units that carry frames: where each ends, and the frames buffered up to its end. */
  private readonly unitEnds: Uint32Array;
  private readonly framesThrough: Uint32Array;
  private units = 0;
  private readonly counts: Record<ByteSinkDrop, number> = { sink_no_reader: 0, sink_write_failed: 0 };
  /** Set by the first failed write: nothing is written after it. */
  private failedFor: ByteSinkDrop | undefined;
  private failure: Error | undefined;
  private closed = false;
  bytesWritten = 0;

  private constructor(
    readonly name: string,
    private readonly fd: number,
    private readonly ownsFd: boolean,
    capacity: number,
  ) {
    this.buffer = new Uint8Array(capacity);
    const most = Math.ceil(capacity / SMALLEST_FRAME_UNIT);
    this.unitEnds = new Uint32Array(most);
    this.framesThrough = new Uint32Array(most);
  }

  /** "-" is stdout; anything else is created or truncated. */
  static open(path: string, capacity = 64 * 1024): ByteSink {
    if (path === "-") return new ByteSink("stdout", 1, false, capacity);
    return new ByteSink(path, openSync(path, "w", 0o644), true, capacity);
  }

  /** Writes through `fd`, already open on `path` for writing; closed with the sink. */
  static adopt(path: string, fd: number, capacity = 64 * 1024): ByteSink {
    return new ByteSink(path, fd, true, capacity);
  }

  get dropped(): Readonly<Record<string, number>> {
    return this.counts;
  }

  /** Takes them (a slow file slows the writer instead), unless a write has failed: then they are dropped. */
  write(bytes: Uint8Array, frames = 0): boolean {
    if (this.failedFor) {
      this.counts[this.failedFor] += frames;
      return false;
    }
    if (bytes.length > this.buffer.length - this.used || (frames > 0 && this.units === this.unitEnds.length)) {
      try {
        this.flush();
      } catch (e) {
        this.counts[this.failedFor!] += frames;
        throw e;
      }
      if (bytes.length > this.buffer.length) {
        // Too large to buffer: written straight, and dropped whole unless written whole.
        const { code } = this.writeAll(bytes);
        if (code !== undefined) this.fail(code, frames);
        return true;
      }
    }
    this.buffer.set(bytes, this.used);
    this.used += bytes.length;
    if (frames > 0) {
      const i = this.units++;
      this.unitEnds[i] = this.used;
      this.framesThrough[i] = (i > 0 ? this.framesThrough[i - 1]! : 0) + frames;
    }
    return true;
  }

  /** Hands buffered bytes to the kernel. Throws (e.g. ENOSPC on /dev/full) with the sink named, and again once failed. */
  flush(): void {
    if (this.failure) throw this.failure;
    if (this.used === 0) return;
    const used = this.used;
    const units = this.units;
    this.used = 0;
    this.units = 0;
    const { at, code } = this.writeAll(this.buffer.subarray(0, used));
    if (code === undefined) return;
    // The units written whole before the failure reached the kernel; the frames of the rest did not.
    let whole = 0;
    while (whole < units && this.unitEnds[whole]! <= at) whole++;
    const buffered = units > 0 ? this.framesThrough[units - 1]! : 0;
    this.fail(code, buffered - (whole > 0 ? this.framesThrough[whole - 1]! : 0));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.flush();
      if (this.ownsFd) {
        try {
          fsyncSync(this.fd);
        } catch {
          // fsync is best effort: pipes and character devices refuse it
        }
      }
    } finally {
      if (this.ownsFd) closeSync(this.fd);
    }
  }

  /** Writes `bytes` whole, waiting out a full non-blocking pipe; a failure stops it at `at`, with its errno name. */
  private writeAll(bytes: Uint8Array): { at: number; code?: string } {
    for (let at = 0; ; ) {
      const stopped = writeFrom(this.fd, bytes, at);
      this.bytesWritten += stopped.at - at;
      if (stopped.code !== "EAGAIN") return stopped;
      at = stopped.at;
      Bun.sleepSync(1);
    }
  }

  /** The first failed write: `frames` it could not write, and everything after it, are dropped. */
  private fail(code: string, frames: number): never {
    this.failedFor = readerGone(code) ? "sink_no_reader" : "sink_write_failed";
    this.counts[this.failedFor] += frames;
    this.failure = new Error(`cannot write to sink ${this.name}: ${code}`);
    throw this.failure;
  }
}

/** A write's errno that says the reader has gone: EPIPE, or ECONNRESET from a socket's reader. */
export function readerGone(code: string): boolean {
  return code === "EPIPE" || code === "ECONNRESET";
}

/**
 * Writes `bytes` to `fd` from `at` on until all of it is written or a write
 * fails: how far it got, and the errno name ("EAGAIN", "EPIPE", ...) of the
 * failure that stopped it short.
 */
export function writeFrom(fd: number, bytes: Uint8Array, at = 0): { at: number; code?: string } {
  while (at < bytes.length) {
    try {
      at += writeSync(fd, bytes, at, bytes.length - at);
    } catch (e) {
      return { at, code: (e as NodeJS.ErrnoException).code ?? String(e) };
    }
  }
  return { at };
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
 * anything else, or when `stopped()` comes first.
 */
export async function holdFifoForWriting(path: string, stopped: () => boolean, waiting: () => void): Promise<number | undefined> {
  if (path === "-" || !statSync(path, { throwIfNoEntry: false })?.isFIFO()) return undefined;
  for (let told = false; !stopped(); await Bun.sleep(FIFO_READER_LOOK_MS)) {
    try {
      return openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      // ENXIO: no reader yet; ENOENT: no FIFO just now. Anything else the sink's own open reports.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENXIO" && code !== "ENOENT") return undefined;
    }
    if (!told) waiting();
    told = true;
  }
  return undefined;
}
