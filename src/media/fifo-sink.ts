import { closeSync, constants, fstatSync, openSync, statSync } from "node:fs";
import { MessageType, ParsedMessage } from "../protocol/index.ts";
import { PassingShortage } from "../io/passing-errno.ts";
import { writeFrom } from "../io/write-from.ts";
import { LINGER_MS, readerGone, RETRY_MS, type ByteOutput, type KeptUnit } from "./byte-sink.ts";
import { refusedIfLinked, sinkFollowFlag } from "./sink-path.ts";
import type { FifoReport } from "./fifo-source.ts";
import type { FrameSink } from "./frame-sink.ts";

/**
 * Why a FIFO sink dropped an OpusFrame: no process had the FIFO open for
 * reading, the sink could not open it for a while (no descriptor free:
 * EMFILE, ENFILE), or its reader had not read what came before.
 */
export type FifoSinkDrop = "sink_no_reader" | "sink_open_failed" | "sink_reader_slow";

/** While no reader is there, how often the sink looks again (ms): a new reader hears audio within this. */
export const READER_LOOK_MS = 200;

/**
 * The most bytes that wait for a reader that takes nothing when a stream's
 * beginning comes (ByteOutput.write's `kept`: an OpusHead page, a Config): a
 * session whose audio changes again and again (Config after Config) would
 * otherwise hold more and more. Past it that beginning is refused, with the
 * rest of its stream, until the stream begins again with room for it; the end
 * of a stream begun always waits, so what the reader gets stays valid.
 */
export const KEPT_BYTES = 64 * 1024;

/**
 * Sets the capacity of a reader's pipe (its fd): the bytes it has then (the
 * kernel's rounding of the size asked for, or the size it kept), when they
 * could be read, and why it is not the size asked for.
 */
export type PipeSizer = (fd: number) => { bytes?: number; error?: string };

export interface FifoSinkOptions {
  /** The reasons its streams drop for (an Ogg stream: sink_invalid_packet), named from the start. */
  streamReasons?: readonly string[];
  /**
   * A reader already there on this descriptor, set non-blocking by the caller
   * (stdout, a pipe or socket to a player): written from the first message,
   * never closed (the process's exit ends it), and never looked for again once
   * it has gone (the rest is counted sink_no_reader). Not given: the FIFO at
   * the sink's name is opened for each reader.
   */
  fd?: number;
  /**
   * Bounds each reader's pipe: dropping starts once it is full, so this is how
   * far behind the audio a reader that fell behind stays. Not given: the
   * kernel's size (64 KiB).
   */
  sizePipe?: PipeSizer;
}

/** The sink's current reader: its end of the pipe, and the stream (Ogg or wire) written for it alone. */
interface Reader {
  pipe: ReaderPipe;
  stream: FrameSink;
}

/**
 * A named pipe written without ever blocking, for a live player on the other
 * end: the channel's other work (and, in `serve`, the other channel) never
 * waits for it. Readers are served one after another, each with a stream of
 * its own from where it came in (an Ogg sink: OpusHead, OpusTags, granule
 * from 0; the session's last Config goes first). What no reader takes at once
 * is dropped, counted by reason: while nobody has the FIFO open for reading
 * (the sink looks again every READER_LOOK_MS), while the sink cannot open it
 * for want of a descriptor (looked at as often, and told once a time), and
 * while the reader has not read what came before (the pipe is full). Only whole pages (Ogg) or whole
 * messages (wire) are dropped, so each reader's stream stays well formed.
 */
export class FifoSink implements FrameSink {
  private readonly counts: Record<FifoSinkDrop, number> = { sink_no_reader: 0, sink_open_failed: 0, sink_reader_slow: 0 };
  /** The last look could not open the FIFO for want of a descriptor: the frames until the next are counted sink_open_failed, not sink_no_reader. */
  private readonly shortage = new PassingShortage((code) =>
    this.report("warn", `cannot open the sink FIFO (${code}); dropping frames until it can (sink_open_failed)`, { sink: this.name }),
  );
  /** Set when a look for a reader failed: raised by that write, then by every flush and close. */
  private failure: Error | undefined;
  /** What the streams of readers gone left out themselves (an Ogg stream: invalid packets), by reason. */
  private readonly streamsBefore: Record<string, number>;
  /** Readers served so far. */
  readers = 0;
  private reader: Reader | undefined;
  /** The session's Config, copied: each new reader's stream starts with it. */
  private config: ParsedMessage | undefined;
  private lastLook = -Infinity;
  private missing = false;
  private closed = false;
  /** The pipe's size could not be set: said once. */
  private sizeFailed = false;

  constructor(
    readonly name: string,
    /** A stream (OggSink, WireSink) over one reader's pipe. */
    private readonly streamFor: (pipe: ByteOutput) => FrameSink,
    private readonly report: FifoReport,
    private readonly options: FifoSinkOptions = {},
  ) {
    this.streamsBefore = Object.fromEntries((options.streamReasons ?? []).map((reason) => [reason, 0]));
  }

  /** Its readers open the FIFO at its name, one after another; otherwise there is one, on the descriptor it was given. */
  private get opensFifo(): boolean {
    return this.options.fd === undefined;
  }

  /** OpusFrames dropped, by reason: no reader, a slow reader, and what a reader's stream left out. */
  get dropped(): Readonly<Record<string, number>> {
    const all: Record<string, number> = { ...this.streamsBefore, ...this.counts };
    for (const [reason, n] of Object.entries(this.reader?.stream.dropped ?? {})) all[reason] = (all[reason] ?? 0) + n;
    return all;
  }

  write(message: ParsedMessage): void {
    if (this.closed) return;
    const isFrame = message.type === MessageType.OpusFrame;
    // Failed (the path became something other than a FIFO): no reader can get it, ever.
    if (this.failure) {
      if (isFrame) this.counts.sink_no_reader++;
      return;
    }
    const isConfig = message.type === MessageType.Config;
    if (isConfig) this.config = copyMessage(message);
    let reader = this.reader;
    if (!reader) {
      try {
        reader = this.lookForReader();
      } catch (e) {
        this.failure = e as Error;
        if (isFrame) this.counts.sink_no_reader++;
        throw e;
      }
      if (!reader) {
        if (isFrame) this.counts[this.shortage.on ? "sink_open_failed" : "sink_no_reader"]++;
        return;
      }
      // A new reader's stream starts with the session's Config.
      if (this.config && !isConfig) reader.stream.write(this.config);
    }
    reader.stream.write(message);
    this.letGoIfGone();
  }

  flush(): void {
    if (this.failure) throw this.failure;
    this.reader?.stream.flush();
    this.letGoIfGone();
  }

  /**
   * Ends the reader's stream (an Ogg sink: its end-of-stream page) and closes
   * the FIFO, so the reader sees its end; settles once the reader has taken
   * what was begun (at most LINGER_MS), without blocking meanwhile.
   */
  async close(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.closed) return;
    this.closed = true;
    const reader = this.reader;
    this.reader = undefined;
    if (!reader) return;
    reader.pipe.ending = true;
    this.endStream(reader);
    await reader.pipe.closed;
    if (reader.pipe.failure) throw reader.pipe.failure;
  }

  /** Opens the FIFO if a reader has it open, at most once every READER_LOOK_MS. */
  private lookForReader(): Reader | undefined {
    const now = performance.now();
    if (now - this.lastLook < READER_LOOK_MS) return undefined;
    this.lastLook = now;
    const given = this.options.fd;
    if (given !== undefined) return this.readers === 0 ? this.served(given) : undefined;
    let fd: number;
    // Another user's symbolic link in a world-writable sticky directory is refused, not followed.
    const follow = sinkFollowFlag(this.name);
    try {
      // Non-blocking: with no reader this fails (ENXIO) at once instead of waiting for one.
      fd = openSync(this.name, constants.O_WRONLY | constants.O_NONBLOCK | follow);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (code === "ELOOP") throw refusedIfLinked(this.name, e);
      // Descriptors run out for a while (clients held, another process): a later look may open it.
      if (this.shortage.met(code)) return undefined;
      this.shortage.over();
      if (code === "ENOENT") {
        // A pipeline restarting removes the FIFO and makes it again: carry on meanwhile, counting drops.
        if (!this.missing) this.report("warn", "the sink FIFO is gone; dropping frames until it is made again and read", { sink: this.name });
        this.missing = true;
        return undefined;
      }
      // ENXIO is no reader for a FIFO, but also what a Unix socket at the path gives.
      if (statSync(this.name, { throwIfNoEntry: false })?.isFIFO() === false) throw notAFifo(this.name);
      if (code === "ENXIO") return undefined;
      throw new Error(`cannot open sink ${this.name}: ${code}`);
    }
    this.missing = false;
    this.shortage.over();
    if (!fstatSync(fd).isFIFO()) {
      closeSync(fd);
      throw notAFifo(this.name);
    }
    return this.served(fd);
  }

  /** The next reader, on `fd`: one the sink opened (a FIFO's), closed with its stream, or the one it was given. */
  private served(fd: number): Reader {
    this.readers++;
    const sized = this.options.sizePipe?.(fd);
    if (sized?.error !== undefined && !this.sizeFailed) {
      this.sizeFailed = true;
      this.report("warn", "cannot size the sink's pipe; a slow reader may fall as far behind as the size it has allows", { sink: this.name, error: sized.error });
    }
    const opened = this.opensFifo ? "sink FIFO opened by a reader" : "sink written to its reader without blocking";
    // The size the reader's pipe has, sized or not: how far behind it can fall.
    this.report("info", opened, { sink: this.name, reader: this.readers, pipe_bytes: sized?.bytes });
    const pipe = new ReaderPipe(this.name, fd, this.counts, this.opensFifo);
    this.reader = { pipe, stream: this.streamFor(pipe) };
    return this.reader;
  }

  /** Closes a reader's stream, keeping what it counted. */
  private endStream(reader: Reader): void {
    try {
      reader.stream.close();
    } finally {
      for (const [reason, n] of Object.entries(reader.stream.dropped ?? {})) this.streamsBefore[reason] = (this.streamsBefore[reason] ?? 0) + n;
    }
  }

  /** After a write that found the reader gone: ends its stream (what is left is counted as dropped) and looks for the next. */
  private letGoIfGone(): void {
    const reader = this.reader;
    if (!reader?.pipe.gone) return;
    this.reader = undefined;
    this.endStream(reader);
    if (reader.pipe.failure) throw reader.pipe.failure;
    if (this.opensFifo) this.report("info", "sink FIFO's reader has gone; waiting for the next", { sink: this.name, reader: this.readers });
    else this.report("warn", "sink's reader has gone; what comes next is dropped (sink_no_reader)", { sink: this.name });
  }
}

/**
 * One reader's end of the FIFO, opened non-blocking. Each write is one unit
 * (a page, a message): written whole, or dropped whole if the pipe takes
 * none of it. A unit the pipe took only part of is finished before anything
 * after it, offered again every RETRY_MS until the pipe has room, so the
 * reader never sees a unit cut short while it reads. Units the stream
 * cannot do without (`kept`: a Config, an Ogg stream's headers and end; a
 * stream's beginning only while no more than KEPT_BYTES wait) and, once the
 * stream is ending (`ending`), every unit wait their turn instead of being
 * dropped, so a reader that is only slow still gets a stream it can play, to
 * its end; closing waits up to LINGER_MS for them, without blocking, then
 * closes the pipe. A beginning refused has the rest of its stream refused
 * with it, until a beginning is taken.
 */
class ReaderPipe implements ByteOutput {
  /** The reader closed its end (EPIPE), or the pipe failed: nothing more can reach it. */
  gone = false;
  /** A failure other than the reader leaving, for the sink to raise on its next call. */
  failure: Error | undefined;
  /** The stream's last units are being written: hold them rather than drop them. */
  ending = false;
  /** A stream's beginning was refused (KEPT_BYTES): the rest of that stream is too, until a beginning is taken. */
  private refusing = false;
  /** Units not yet wholly in the pipe, in order: the first may be begun; and their bytes. */
  private held: { bytes: Uint8Array; frames: number }[] = [];
  private heldBytes = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closing = false;
  private lingerUntil = 0;
  private fdClosed = false;
  private readonly done = Promise.withResolvers<void>();

  constructor(
    readonly name: string,
    private readonly fd: number,
    /** The sink's own counts (not the ByteOutput's `dropped`, which a stream would add to its own again). */
    private readonly drops: Record<FifoSinkDrop, number>,
    /** Closed when the stream ends (a FIFO opened for this reader), or left open (stdout). */
    private readonly owned = true,
  ) {}

  /** Settles once the pipe is closed. */
  get closed(): Promise<void> {
    return this.done.promise;
  }

  write(bytes: Uint8Array, frames: number, kept?: KeptUnit): boolean {
    if (this.gone || this.closing) {
      this.drops.sink_no_reader += frames;
      return false;
    }
    // The rest of a stream whose head or Config the reader will not get: no player could play it.
    if (this.refusing && kept !== "begins") {
      this.drops.sink_reader_slow += frames;
      return false;
    }
    const written = this.drain() ? this.put(bytes) : 0;
    if (this.gone) {
      this.drops.sink_no_reader += frames;
      return false;
    }
    if (written === 0 && !this.ending && !this.waits(bytes.length, kept)) {
      this.drops.sink_reader_slow += frames;
      if (kept === "begins") this.refusing = true;
      return false;
    }
    if (kept === "begins") this.refusing = false;
    if (written < bytes.length) {
      // Copied: the caller's buffer is reused for its next unit.
      this.held.push({ bytes: bytes.slice(written), frames });
      this.heldBytes += bytes.length - written;
      this.retryLater();
    }
    return true;
  }

  /** Whether a unit the full pipe takes none of waits for it: one that completes a stream begun, one that begins a stream while no more than KEPT_BYTES wait. */
  private waits(length: number, kept: KeptUnit | undefined): boolean {
    return kept === "completes" || (kept === "begins" && this.heldBytes + length <= KEPT_BYTES);
  }

  flush(): void {
    if (!this.gone && !this.closing) this.drain();
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.lingerUntil = performance.now() + LINGER_MS;
    if (this.drain()) this.closeFd();
  }

  /** Writes held units in order; whether none is left (those the reader can no longer get are counted as dropped). */
  private drain(): boolean {
    while (this.held.length > 0) {
      const unit = this.held[0]!;
      const written = this.gone ? 0 : this.put(unit.bytes);
      if (this.gone) {
        this.drop("sink_no_reader");
        return true;
      }
      this.heldBytes -= written;
      if (written < unit.bytes.length) {
        unit.bytes = unit.bytes.subarray(written);
        this.retryLater();
        return false;
      }
      this.held.shift();
    }
    return true;
  }

  /** Gives up on the held units, counting their frames under `reason`. */
  private drop(reason: FifoSinkDrop): void {
    for (const unit of this.held) this.drops[reason] += unit.frames;
    this.held = [];
    this.heldBytes = 0;
  }

  private retryLater(): void {
    this.timer ??= setTimeout(this.retry, RETRY_MS);
  }

  private readonly retry = () => {
    this.timer = undefined;
    if (this.drain()) {
      if (this.closing) this.closeFd();
      return;
    }
    if (this.closing && performance.now() >= this.lingerUntil) {
      // The reader is there but has not read for LINGER_MS: it sees its stream end part-way through a unit.
      this.drop("sink_reader_slow");
      this.closeFd();
    }
  };

  private closeFd(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.fdClosed) return;
    this.fdClosed = true;
    if (this.owned) closeSync(this.fd);
    this.done.resolve();
  }

  /**
   * Writes as much of `bytes` as the pipe takes now; how much that was. A
   * failure leaves it gone, as a reader leaving does (so what it could not
   * take is counted where the reader's absence is); one other than the
   * reader leaving is kept for the sink to raise on its next call, on the
   * channel's path rather than in a timer, with every frame counted first.
   */
  private put(bytes: Uint8Array): number {
    const { at, code } = writeFrom(this.fd, bytes);
    if (code === undefined || code === "EAGAIN") return at;
    this.gone = true;
    if (!readerGone(code)) this.failure = new Error(`cannot write to sink ${this.name}: ${code}`);
    return at;
  }
}

function notAFifo(path: string): Error {
  return new Error(`sink ${path} is no longer a FIFO`);
}

/** A message of its own, whose bytes outlive the parser's buffer (the parser reuses both). */
function copyMessage(message: ParsedMessage): ParsedMessage {
  const copy = new ParsedMessage();
  copy.bytes = message.raw.slice();
  copy.type = message.type;
  copy.length = message.length;
  copy.streamOffset = message.streamOffset;
  return copy;
}
