import { realpathSync, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { ByteSink, type ByteOutput } from "./byte-sink.ts";
import { openByteSource, type ByteSource } from "./byte-source.ts";
import { FifoSink, type PipeSizer } from "./fifo-sink.ts";
import { FifoSource, type FifoReport } from "./fifo-source.ts";
import { checkAppendFormat, checkFileFormat, type MediaFormat } from "./file-format.ts";
import type { FrameSink, SinkReport } from "./frame-sink.ts";
import type { FrameSource, SourceFrame, SourceReport } from "./frame-source.ts";
import { OGG_SINK_DROP, OggSink, wholeOggLength, type OggSinkOptions } from "./ogg-sink.ts";
import { OGG_SOURCE_COUNTS, OggSource } from "./ogg-source.ts";
import type { Channel } from "../protocol/index.ts";
import { sinkFollowFlag } from "./sink-path.ts";
import { WireSink, wholeCaptureLength } from "./wire-sink.ts";
import { WireSource } from "./wire-source.ts";

export type { MediaFormat };

export interface SourceOptions {
  /** Ogg: skip (and count) pages with a bad CRC instead of failing. */
  lenient: boolean;
  /** A FIFO source tells of its writers coming and going here, an Ogg source of what it skips. */
  report: SourceReport;
}

export interface SinkOptions {
  /** Ogg: OpusHead pre-skip (48 kHz samples) and the longest a page is held back (ms). */
  preSkip: number;
  pageMs: number;
  /** Ogg: OpusHead's channels until a Config says (the output channel carries none); 2 when not given. */
  channels?: number;
  /**
   * Given, a FIFO is written without ever blocking (FifoSink): its readers
   * one after another, each with a stream of its own, dropping (and counting)
   * what no reader takes at once; they come and go here. Not given, a FIFO
   * is written like a file: blocking while its reader is absent or slow.
   */
  fifoReaders?: FifoReport;
  /** With fifoReaders: sets the capacity of each reader's pipe (FifoSinkOptions.sizePipe). */
  sizePipe?: PipeSizer;
  /**
   * With fifoReaders: stdout ("-") is a pipe or socket the caller has made
   * non-blocking, to a player: written as a FIFO's one reader, never waited for.
   */
  liveStdout?: boolean;
  /** Without fifoReaders: a descriptor already open on `path` for writing, written through instead of opening it (taken over). */
  fd?: number;
  /** A file already there is added to (after an Ogg stream: the next link of a chain), not truncated. */
  append?: boolean;
  /** The channel whose messages a wire sink records: a capture of the other is not appended to. */
  channel?: Channel;
  /** A regular file's sink tells here when its file is found removed, moved away or replaced at its path, and back (SinkFileWatch). */
  report?: SinkReport;
  /** A regular file is written in the thread pool (ByteSink.open's `offLoop`): a disk that stops taking writes holds no one else up; a write that fails there is told here, to end the run. */
  offLoop?: (failure: Error) => void;
}

/**
 * Opens a source of `format` without waiting for anything: a regular file's
 * format is checked now (a mistake is told at start); a named pipe follows
 * its writers one after another, each read only once it comes; stdin ("-")
 * and devices are read once, to their end.
 */
export async function openSource(format: MediaFormat, path: string, options: SourceOptions): Promise<FrameSource> {
  const read = (bytes: ByteSource): FrameSource => {
    switch (format) {
      case "wire":
        return WireSource.from(bytes);
      case "ogg":
        return OggSource.from(bytes, { lenient: options.lenient, report: options.report });
    }
  };
  if (path !== "-") {
    // Synchronous: a stat of a local file is quicker than a hop through the thread pool, at start-up.
    const kind = statSync(path);
    // A FIFO in the file system, which the next writer opens again; not an anonymous pipe reached
    // through /dev/stdin or /proc/self/fd (its "real path" is pipe:[inode]), which ends with its writer.
    if (kind.isFIFO() && isAbsolute(realpathSync(path))) return new FifoSource(path, read, options.report, format === "ogg" ? OGG_SOURCE_COUNTS : []);
    if (kind.isFile()) await checkFileFormat(path, format, options.lenient);
  }
  return read(await openByteSource(path));
}

/**
 * What openSink refuses before it opens anything (a bad option, another
 * user's link, a file --append cannot add to), told without opening: a
 * server checks its sink so before it listens, and opens it (truncating a
 * file) only once it does.
 */
export function checkSink(format: MediaFormat, path: string, options: SinkOptions): void {
  if (format === "ogg") OggSink.check(oggOptions(options));
  // Another user's symbolic link in a world-writable sticky directory is refused before anything follows it.
  if (path !== "-") sinkFollowFlag(path);
  // A FIFO, a device or a file not there yet is added to as >> adds (checkAppendFormat).
  if (options.append && options.fd === undefined && path !== "-") checkAppendFormat(path, format, options.channel);
}

/** An Ogg sink's part of `options`. */
function oggOptions(options: SinkOptions): OggSinkOptions {
  return { preSkip: options.preSkip, pageMs: options.pageMs, channels: options.channels };
}

export function openSink(format: MediaFormat, path: string, options: SinkOptions): FrameSink {
  const ogg = oggOptions(options);
  // Checked before anything is opened or created: a bad option leaves nothing behind.
  checkSink(format, path, options);
  const streamFor = (bytes: ByteOutput): FrameSink => (format === "ogg" ? OggSink.over(bytes, ogg) : WireSink.over(bytes));
  const stdout = path === "-" && options.liveStdout === true;
  if (options.fifoReaders && (stdout || (path !== "-" && statSync(path, { throwIfNoEntry: false })?.isFIFO()))) {
    return new FifoSink(stdout ? "stdout" : path, streamFor, options.fifoReaders, {
      streamReasons: format === "ogg" ? [OGG_SINK_DROP] : [],
      sizePipe: options.sizePipe,
      fd: stdout ? 1 : undefined,
    });
  }
  // Appended to, a file cut short is cut back to its last whole message or page first.
  const whole = format === "wire" ? wholeCaptureLength : wholeOggLength;
  return streamFor(options.fd === undefined ? ByteSink.open(path, { append: options.append, whole, report: options.report, offLoop: options.offLoop }) : ByteSink.adopt(path, options.fd));
}

/** Is the source a live stream (stdin, a FIFO) rather than a file that can be read at leisure? */
export async function isLiveSource(path: string): Promise<boolean> {
  if (path === "-") return true;
  return !statSync(path).isFile();
}

/**
 * Reads `source` up to its first frame (parsing any header on the way, so an
 * Ogg source knows its OpusHead and frame size), and returns a source that
 * yields that frame first, then the rest.
 */
export async function readUpToFirstFrame(source: FrameSource): Promise<FrameSource> {
  let first: SourceFrame | undefined;
  for (;;) {
    const frame = source.next();
    if (frame) {
      first = { payload: frame.payload.slice(), timeMs: frame.timeMs, durationMs: frame.durationMs };
      break;
    }
    if (!(await source.fill())) break;
  }
  return {
    get name() {
      return source.name;
    },
    get audioConfig() {
      return source.audioConfig;
    },
    get preSkip() {
      return source.preSkip;
    },
    get counts() {
      return source.counts;
    },
    next() {
      if (!first) return source.next();
      const frame = first;
      first = undefined;
      return frame;
    },
    fill: () => source.fill(),
    rewind: () => source.rewind(),
    close: () => source.close(),
  };
}
