import { closeSync, constants, fsyncSync, openSync, statSync, writeSync } from "node:fs";

/**
 * Where a sink's bytes go: a file or stdout (ByteSink), or the reader of a
 * FIFO (FifoSink). `frames` is how many OpusFrames the bytes carry, for an
 * output that may drop them and counts what it drops; `write` says whether
 * it took them (false: dropped whole, none of them written).
 */
export interface ByteOutput {
  readonly name: string;
  write(bytes: Uint8Array, frames: number): boolean;
  flush(): void;
  close(): void;
}

/**
 * A buffered, synchronous byte writer over a file or stdout ("-").
 * Synchronous on purpose: a slow sink then slows the reader of the socket
 * (backpressure) instead of piling up memory.
 */
export class ByteSink implements ByteOutput {
  private readonly buffer: Uint8Array;
  private used = 0;
  private closed = false;
  bytesWritten = 0;

  private constructor(
    readonly name: string,
    private readonly fd: number,
    private readonly ownsFd: boolean,
    capacity: number,
  ) {
    this.buffer = new Uint8Array(capacity);
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

  /** Always takes them: a slow file slows the writer instead. */
  write(bytes: Uint8Array): boolean {
    if (bytes.length > this.buffer.length - this.used) {
      this.flush();
      if (bytes.length > this.buffer.length) {
        this.writeAll(bytes);
        return true;
      }
    }
    this.buffer.set(bytes, this.used);
    this.used += bytes.length;
    return true;
  }

  /** Hands buffered bytes to the kernel. Throws (e.g. ENOSPC on /dev/full) with the sink named. */
  flush(): void {
    if (this.used === 0) return;
    const used = this.used;
    this.used = 0;
    this.writeAll(this.buffer.subarray(0, used));
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

  private writeAll(bytes: Uint8Array): void {
    for (let at = 0; ; ) {
      const stopped = writeFrom(this.fd, bytes, at);
      if (stopped.code === undefined) break;
      if (stopped.code !== "EAGAIN") throw new Error(`cannot write to sink ${this.name}: ${stopped.code}`);
      at = stopped.at;
      Bun.sleepSync(1);
    }
    this.bytesWritten += bytes.length;
  }
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
