import { fstatSync, readFileSync, statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";

/** Chunks of bytes from a file or stdin ("-"), read asynchronously so signals and sockets keep flowing. */
export interface ByteSource {
  readonly name: string;
  /** The next chunk (valid until the next read), or null at end of input. */
  read(): Promise<Uint8Array | null>;
  close(): Promise<void>;
  /** True when the source is a regular file that can be read again from the start (for --loop). */
  readonly rewindable: boolean;
  /**
   * True when every pass yields the very same bytes (a file held in memory): what a reader
   * checked on one pass (an Ogg page's CRC) holds on the next. A file read again from disk
   * may have changed in between.
   */
  readonly replaysSameBytes: boolean;
  rewind(): void;
}

const CHUNK = 64 * 1024;
/** A regular file up to this size is read once and kept: a --loop replays it without another read. */
const HELD_FILE_BYTES = 1024 * 1024;

/** A small file, read whole at open: each pass hands out its bytes in one chunk. */
class HeldFileByteSource implements ByteSource {
  private done = false;
  readonly rewindable = true;
  readonly replaysSameBytes = true;
  constructor(
    readonly name: string,
    private readonly bytes: Uint8Array,
  ) {}

  async read(): Promise<Uint8Array | null> {
    if (this.done || this.bytes.length === 0) return null;
    this.done = true;
    return this.bytes;
  }

  rewind(): void {
    this.done = false;
  }

  async close(): Promise<void> {}
}

/**
 * A file read in chunks through the thread pool: a regular file too large to
 * hold, read at its own position so that --loop can start it again; or a
 * character or block device, read in turn, once, to its end. Such a device
 * (/dev/null, /dev/zero) often cannot be polled, so it cannot be a stream on
 * the event loop (epoll refuses it).
 */
class FileByteSource implements ByteSource {
  private readonly buffer = new Uint8Array(CHUNK);
  private position = 0;
  readonly replaysSameBytes = false;
  constructor(
    readonly name: string,
    private readonly handle: FileHandle,
    readonly rewindable: boolean,
  ) {}

  async read(): Promise<Uint8Array | null> {
    const { bytesRead } = await this.handle.read(this.buffer, 0, CHUNK, this.rewindable ? this.position : null);
    if (bytesRead === 0) return null;
    this.position += bytesRead;
    return this.buffer.subarray(0, bytesRead);
  }

  rewind(): void {
    if (!this.rewindable) throw new Error(`${this.name} cannot be rewound`);
    this.position = 0;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

class StreamByteSource implements ByteSource {
  readonly rewindable = false;
  readonly replaysSameBytes = false;
  constructor(
    readonly name: string,
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
  ) {}

  async read(): Promise<Uint8Array | null> {
    const { value, done } = await this.reader.read();
    return done ? null : value;
  }

  rewind(): void {
    throw new Error(`${this.name} cannot be rewound`);
  }

  async close(): Promise<void> {
    await this.reader.cancel().catch(() => {});
  }
}

/**
 * Opens `path` for reading; "-" is stdin. A FIFO is read as a stream, a
 * device through the thread pool. Nothing here waits for a FIFO's writer:
 * that happens at the first read, off the event loop.
 */
export async function openByteSource(path: string): Promise<ByteSource> {
  if (path === "-") {
    // A directory on stdin (`< /tmp`) would fail at the first read, with an errno naming neither.
    if (stdinIsDirectory()) throw new Error("source - (stdin) is a directory, expected a file or a pipe");
    return streamByteSource(path);
  }
  // Synchronous at open (start-up): quicker than hops through the thread pool.
  const kind = statSync(path);
  // As open(2) tells it for a sink: an errno with its path, which the command line names by its option.
  if (kind.isDirectory()) throw Object.assign(new Error(`source ${path} is a directory, expected a file or "-"`), { code: "EISDIR", path });
  if (kind.isCharacterDevice() || kind.isBlockDevice()) return new FileByteSource(path, await openHandle(path), false);
  if (!kind.isFile()) return streamByteSource(path);
  if (kind.size > HELD_FILE_BYTES) return new FileByteSource(path, await openHandle(path), true);
  // Looping a short file (the usual test tone) then costs no read, and no thread-pool wake-up, per pass.
  return new HeldFileByteSource(path, new Uint8Array(readFileSync(path)));
}

function stdinIsDirectory(): boolean {
  try {
    return fstatSync(0).isDirectory();
  } catch {
    // A closed stdin is told by its first read.
    return false;
  }
}

/**
 * A file handle for the thread pool. node:fs/promises is loaded only here: the
 * sources a device streams from (a FIFO, a short file held in memory) never
 * need it, and loading it costs every process about as much start-up time
 * and memory as node:fs itself (bench/FINDINGS.md).
 */
async function openHandle(path: string): Promise<FileHandle> {
  const { open } = await import("node:fs/promises");
  return open(path, "r");
}

/**
 * Stdin ("-"), a FIFO or a device as a stream; opened afresh on each call (a
 * FIFO: for its next writer), at once: a path that cannot be opened throws
 * here. `name` is what messages call it (the path, unless given).
 */
export function streamByteSource(path: string, name = path): ByteSource {
  if (path === "-") return new StreamByteSource("stdin", Bun.stdin.stream().getReader());
  return new StreamByteSource(name, Bun.file(path).stream().getReader());
}
