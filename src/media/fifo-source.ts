import { closeSync, constants, fstatSync, openSync, statSync, type Stats } from "node:fs";
import { O_PATH } from "../io/open-flags.ts";
import { PassingShortage } from "../io/passing-errno.ts";
import { streamByteSource, type ByteSource } from "./byte-source.ts";
import type { FrameSource, SourceFrame, SourceReport } from "./frame-source.ts";

/** How the source tells the role about its writers (the role's logger). */
export type FifoReport = SourceReport;

/** How often a source waiting for a writer checks that its path still leads to the FIFO it holds. */
const PATH_CHECK_MS = 1000;
/**
 * How long a path that is gone may take to come back before the run ends: a
 * capture pipeline that restarts with `rm FIFO; mkfifo FIFO` leaves it gone
 * for a moment, and the source may look just then.
 */
const PATH_RETURN_MS = 2000;
/** While the path is gone, or no descriptor is free to open it with, how often the source tries again (ms). */
const OPEN_AGAIN_MS = 20;

/**
 * The frames of a named pipe (FIFO) across its writers. Each writer's bytes
 * are one stream, read by a fresh source of the format (an Ogg stream with
 * its own OpusHead and serial, a wire capture with its own magic); when the
 * writer goes away the source waits for the next one and carries on, so an
 * encoder that restarts is heard again. It ends only when closed.
 *
 * A stream that is malformed or cut short ends with a warning: the frames
 * before the fault went out, the rest of that writer's bytes are read and
 * discarded (the writer is not left blocked), and the next writer is
 * awaited. While it waits, the source checks that its path still leads to
 * the FIFO it holds open: a writer can only reach the one at the path, so
 * a new FIFO made there (a restarted capture pipeline) is opened instead,
 * and a path that is no longer a FIFO, or gone for longer than
 * PATH_RETURN_MS, ends the run, as does any other error of the pipe itself
 * (not readable). An open that fails for want of a descriptor (EMFILE,
 * ENFILE) is tried again every OPEN_AGAIN_MS for as long as it takes: a
 * writer meanwhile waits in its own open, and nothing is lost.
 */
export class FifoSource implements FrameSource {
  private bytes: ByteSource | undefined;
  private stream: FrameSource | undefined;
  /** The stream failed: its writer's remaining bytes are discarded until it closes. */
  private discarding = false;
  private closed = false;
  /** The FIFO the current stream reads (device and inode), and whether a writer has sent it anything yet. */
  private fifo = { dev: 0, ino: 0 };
  private heard = false;
  private pathCheck: ReturnType<typeof setInterval> | undefined;
  /** Frames of the current writer's stream, for the log line at its end. */
  private frames = 0;
  /** The counts of earlier writers' streams, added up (undefined while there were none). */
  private pastCounts: Record<string, number> | undefined;
  /** An open failed for want of a descriptor: told once, until the FIFO is read again. */
  private readonly shortage = new PassingShortage((code) =>
    this.report("warn", `cannot open the FIFO (${code}); trying again until it can`, { source: this.name, every_ms: OPEN_AGAIN_MS }),
  );
  /** The stream's own open failed so: the FIFO is opened again without a word (each try would say it waits). */
  private reopening = false;

  /** `streamCounts`: the kinds a stream counts (an Ogg stream's skipped pages, ...), at 0 before the first writer. */
  constructor(
    readonly name: string,
    private readonly openStream: (bytes: ByteSource) => FrameSource,
    private readonly report: FifoReport,
    private readonly streamCounts: readonly string[] = [],
  ) {}

  get audioConfig() {
    return this.stream?.audioConfig;
  }

  get preSkip() {
    return this.stream?.preSkip;
  }

  /** What every writer's stream left out so far, added up; each kind from the start. */
  get counts(): Readonly<Record<string, number>> {
    const total: Record<string, number> = {};
    for (const kind of this.streamCounts) total[kind] = 0;
    for (const counts of [this.pastCounts, this.stream?.counts]) {
      for (const [kind, n] of Object.entries(counts ?? {})) total[kind] = (total[kind] ?? 0) + n;
    }
    return total;
  }

  next(): SourceFrame | undefined {
    const stream = this.stream;
    if (!stream || this.discarding) return undefined;
    try {
      const frame = stream.next();
      if (frame) this.frames++;
      return frame;
    } catch (e) {
      this.failed(e);
      return undefined;
    }
  }

  /** Reads more of the current writer's stream, or waits for the next writer; false once closed. */
  async fill(): Promise<boolean> {
    if (this.closed) return false;
    if (!this.bytes && !(await this.begin())) return false;
    try {
      if (this.discarding) {
        if ((await this.bytes!.read()) !== null) return true;
      } else if (await this.stream!.fill()) {
        return true;
      }
    } catch (e) {
      // Closing cuts the stream short: that is the end, not a fault.
      if (this.closed) return false;
      if (!this.heard && this.openFailed(e)) {
        // The stream's own open (at its first read) found no descriptor free: no writer was let in yet.
        await this.end();
        this.reopening = true;
        await Bun.sleep(OPEN_AGAIN_MS);
        return !this.closed;
      }
      if (isSystemError(e)) throw e;
      this.failed(e);
      return true;
    }
    await this.end();
    return !this.closed;
  }

  /** A pipe cannot be read again from its start; its next writer follows by itself. */
  rewind(): boolean {
    return false;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pathCheck);
    const waiting = this.bytes !== undefined;
    await this.bytes?.close();
    if (waiting) await untilNoReader(this.name);
  }

  /** Opens the FIFO at the path for its next writer; false if the source was closed meanwhile. */
  private async begin(): Promise<boolean> {
    const opened = await this.openPath();
    if (!opened) return false;
    const { stat, bytes } = opened;
    this.fifo = { dev: stat.dev, ino: stat.ino };
    this.heard = false;
    this.bytes = {
      name: bytes.name,
      rewindable: false,
      replaysSameBytes: false,
      read: async () => {
        const chunk = await bytes.read();
        if (chunk !== null) this.heard = true;
        // The FIFO is read again: a later shortage of descriptors is told anew.
        this.shortage.over();
        return chunk;
      },
      rewind: () => bytes.rewind(),
      close: () => bytes.close(),
    };
    this.pastCounts = this.counts;
    this.stream = this.openStream(this.bytes);
    this.discarding = false;
    this.frames = 0;
    this.pathCheck = setInterval(() => this.checkPath(), PATH_CHECK_MS);
    this.pathCheck.unref?.();
    if (!this.reopening) this.report("info", "waiting for a writer", { source: this.name });
    this.reopening = false;
    return true;
  }

  /**
   * The FIFO at the path (its stat) opened for reading, waiting up to
   * PATH_RETURN_MS for a path that is gone to be made again, and as long as
   * it takes for a descriptor to open it with; undefined if the source is
   * closed meanwhile.
   */
  private async openPath(): Promise<{ stat: Stats; bytes: ByteSource } | undefined> {
    let deadline: number | undefined;
    while (!this.closed) {
      try {
        return openFifo(this.name);
      } catch (e) {
        if (!this.openFailed(e)) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT" || performance.now() >= (deadline ?? Infinity)) throw e;
          if (deadline === undefined) this.report("warn", "the FIFO is gone; waiting for it to be made again", { source: this.name, wait_ms: PATH_RETURN_MS });
          deadline ??= performance.now() + PATH_RETURN_MS;
        }
      }
      await Bun.sleep(OPEN_AGAIN_MS);
    }
    return undefined;
  }

  /** Whether `e` is an open's failure that passes (no descriptor free: EMFILE, ENFILE; a call cut short): told once, then tried again. */
  private openFailed(e: unknown): boolean {
    return this.shortage.met((e as NodeJS.ErrnoException)?.code);
  }

  /**
   * No writer can reach a FIFO whose path now leads elsewhere or nowhere:
   * stop waiting on it, so the next stream opens the path again (and a path
   * gone for longer than PATH_RETURN_MS ends the run there). A writer that has
   * begun is read to its end.
   */
  private checkPath(): void {
    if (this.heard || !this.bytes) return;
    let stat;
    try {
      stat = statSync(this.name);
    } catch {
      // Gone: told by the next open.
    }
    if (stat && stat.dev === this.fifo.dev && stat.ino === this.fifo.ino) return;
    this.report("warn", "the FIFO at the path was replaced or removed; opening the path again", { source: this.name });
    void this.bytes.close();
  }

  private failed(e: unknown): void {
    this.discarding = true;
    // Without a byte there was no stream to fault (a writer that sent nothing, a FIFO let go).
    if (this.heard) this.report("warn", "stream failed; discarding the rest of it", { source: this.name, frames: this.frames, error: (e as Error).message });
  }

  /** The writer went away: its stream is over. */
  private async end(): Promise<void> {
    clearInterval(this.pathCheck);
    const bytes = this.bytes!;
    this.bytes = undefined;
    await bytes.close();
    if (!this.closed && !this.discarding && this.heard) this.report("info", "writer closed the stream", { source: this.name, frames: this.frames });
  }
}

/**
 * The FIFO at `path` opened for reading, with its identity. The path is looked
 * up once, by the open: the stream reads the very FIFO whose device and inode
 * the source keeps, and a path that is gone for a moment is seen as gone (a
 * stat and a separate open could each find a different FIFO there, or none).
 * Opened O_PATH, which is not a reader: a writer waiting for one goes on
 * waiting until Bun's own open (O_NONBLOCK: it does not wait for a writer).
 * Had ours been the reader, a writer could come, write and leave before
 * Bun's open; Linux then never shows that descriptor the writer's hang-up (a
 * non-blocking reader opened with no writer sees none until a writer comes
 * after it), and the stream would never end.
 */
function openFifo(path: string): { stat: Stats; bytes: ByteSource } {
  let fd;
  try {
    fd = openSync(path, O_PATH);
  } catch (e) {
    // Say what the path is no longer, if it is something else.
    if ((e as NodeJS.ErrnoException).code !== "ENOENT" && statSync(path, { throwIfNoEntry: false })?.isFIFO() === false) throw notAFifo(path);
    throw e;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFIFO()) throw notAFifo(path);
    // Bun opens its own descriptor (and closes it in its own time); through
    // /proc/self/fd it reaches this FIFO, whatever the path holds by now.
    return { stat, bytes: streamByteSource(`/proc/self/fd/${fd}`, path) };
  } finally {
    closeSync(fd);
  }
}

function notAFifo(path: string): Error {
  return new Error(`source ${path} is no longer a named pipe (FIFO)`);
}

/**
 * A cancelled stream closes its read end of the FIFO a moment after cancel()
 * resolves: until then a writer would be taken by a reader that reads nothing,
 * and its bytes lost. Waits until no reader is left, testing with a
 * non-blocking open for writing (ENXIO: none); one it opens meanwhile is
 * closed at once, which the reader sees as end of file.
 */
async function untilNoReader(path: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      return; // ENXIO: no reader left (or the FIFO is gone)
    }
    await Bun.sleep(5);
  }
}

/** An error of the file system (a removed or unreadable pipe), as opposed to bad content. */
function isSystemError(e: unknown): boolean {
  return typeof (e as NodeJS.ErrnoException)?.code === "string";
}
