import { readSync } from "node:fs";
import type { FilePlacement } from "../io/file-placement.ts";
import {
  FrameParser,
  HEADER_SIZE,
  INPUT_MAGIC,
  MAX_MESSAGE,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
  readUint32LE,
  validateHeader,
  writeHeader,
  type ParsedMessage,
} from "../protocol/index.ts";
import { ByteSink, dataEnd, TAIL_BYTES, wholeLengthOf, type ByteOutput, type Kept } from "./byte-sink.ts";
import type { FrameSink } from "./frame-sink.ts";

/** Records every message exactly as received: the lossless wire capture format. */
export class WireSink implements FrameSink {
  /** A Config the output refused (a FIFO's reader far behind), copied: offered again ahead of each message after it. */
  private owed: Uint8Array | undefined;

  private constructor(private readonly bytes: ByteOutput) {}

  static open(path: string): WireSink {
    return new WireSink(ByteSink.open(path));
  }

  /** A capture written to `bytes`, each message in one write. */
  static over(bytes: ByteOutput): WireSink {
    return new WireSink(bytes);
  }

  get name(): string {
    return this.bytes.name;
  }

  /** What the output dropped: a wire capture leaves out nothing itself. */
  get dropped(): Readonly<Record<string, number>> | undefined {
    return this.bytes.dropped;
  }

  write(message: ParsedMessage): void {
    // A reader's stream without its Config cannot be played: a full pipe's reader gets it all the same,
    // or, refused, gets nothing after it until it is taken.
    const isConfig = message.type === MessageType.Config;
    if (this.owed && !isConfig && this.bytes.write(this.owed, 0, "begins")) this.owed = undefined;
    const taken = this.bytes.write(message.raw, message.type === MessageType.OpusFrame ? 1 : 0, isConfig ? "begins" : undefined);
    if (isConfig) this.owed = taken ? undefined : message.raw.slice();
  }

  flush(): void {
    this.bytes.flush();
  }

  close(): void | Promise<void> {
    return this.bytes.close();
  }

  /** While its output holds what its reader has not taken (FrameSink.waiting). */
  get waiting(): Promise<void> | undefined {
    return this.bytes.waiting;
  }

  /** Where the file it records into stands against its path (FrameSink.filePlacement): a regular file's only. */
  filePlacement(): FilePlacement | undefined {
    return this.bytes.filePlacement?.();
  }
}

/**
 * Where a wire capture's whole messages end (ByteSink's WholeLength): a
 * capture of either channel read message by message, up to a last message
 * cut short, or to zero bytes that end it (wholeLengthOf). Undefined for
 * bytes that are not a capture's (another magic, a header a capture cannot
 * have): damage or another format, not cut there. A capture over
 * TAIL_BYTES is read from the first header in its last TAIL_BYTES that leads
 * message by message to its end (one found in a payload leads to bytes that
 * are not a header), from its start if none of the first few does; one that
 * leads to zeros that end it, or a tail with no header at all, is looked at
 * again where its zeros begin (wholeLengthOf), not read from its start.
 */
export function wholeCaptureLength(path: string): Kept | undefined {
  return wholeLengthOf(path, (fd, end) => {
    const length = wholeMessages(fd, end);
    return length === undefined ? undefined : { length };
  });
}

/** Where the whole messages of the capture in `fd`'s first `end` bytes end; undefined when they are not a capture's. */
function wholeMessages(fd: number, end: number): number | undefined {
  if (end > TAIL_BYTES) {
    const told = tailMessages(fd, end - TAIL_BYTES, end);
    if (told !== BROKEN) return told;
  }
  return messagesFrom(fd, 0, end) as number | undefined;
}

/** messagesFrom's answer when a message from there on is not one a capture can have (a header looked for, found in a payload). */
const BROKEN = null;
/** At most so many headers found in a capture's tail are followed to its end before it is read from its start (damage in it breaks each). */
const TAIL_HEADERS = 16;

/**
 * Where the whole messages end, as the headers found between `from` (the
 * tail's start) and `end` tell: the first that leads message by message to
 * the end decides, unless another in the tail's first MAX_MESSAGE bytes,
 * where the capture's own first message there begins, that its messages do
 * not begin at leads to the end elsewhere (headers carried in payloads lead
 * one to the next too). BROKEN when the tail cannot tell: the capture is read
 * from its start. Undefined with no header in the tail (zeros, damage), as the
 * walk from the start, which the last message would begin in the tail for, says too.
 */
function tailMessages(fd: number, from: number, end: number): number | undefined | typeof BROKEN {
  const first = new Uint8Array(4);
  const tail = new Uint8Array(end - from);
  if (readSync(fd, first, 0, 4, 0) !== 4 || readSync(fd, tail, 0, tail.length, from) !== tail.length) return BROKEN;
  const magic = readUint32LE(first, 0);
  if (magic !== OUTPUT_MAGIC && magic !== INPUT_MAGIC) return BROKEN;
  let told: number | undefined | typeof BROKEN = BROKEN;
  /** The told chain's next message in the tail, past the last header found. */
  let chain = 0;
  let followed = 0;
  let found = false;
  for (let at = 0; at + HEADER_SIZE <= tail.length; at++) {
    if (validateHeader(tail, at, magic) !== undefined) continue;
    found = true;
    if (told !== BROKEN) {
      if (at >= MAX_MESSAGE) break;
      while (chain < at) chain += HEADER_SIZE + readUint32LE(tail, chain + 5);
      if (chain === at) continue;
    }
    if (followed++ === TAIL_HEADERS) return BROKEN;
    const whole = messagesFrom(fd, from + at, end);
    if (whole === BROKEN) continue;
    if (told !== BROKEN && whole !== told) return BROKEN;
    if (told === BROKEN) chain = at;
    told = whole;
  }
  return found ? told : undefined;
}

/**
 * Where the whole messages from `from`, the start of a message (0, or a
 * header tailMessages found), up to `end` end; undefined when the bytes are not a
 * capture's. Begun after the file's start, BROKEN for a message that is not
 * one a capture can have: the header looked for was found in a payload.
 */
function messagesFrom(fd: number, from: number, end: number): number | undefined | typeof BROKEN {
  // A MiB at a time, or the tail's bytes: each header followed there would otherwise take a MiB of its own.
  const chunk = new Uint8Array(Math.min(1 << 20, end - from));
  let parser: FrameParser | undefined;
  try {
    for (let at = from, n; at < end && (n = readSync(fd, chunk, 0, Math.min(chunk.length, end - at), at)) > 0; at += n) {
      if (!parser) {
        // Cut inside its first magic: nothing whole in it, if the bytes begin either channel's.
        if (n < 4) return [OUTPUT_MAGIC, INPUT_MAGIC].some((magic) => beginsHeader(fd, from, n, magic)) ? from : undefined;
        const magic = readUint32LE(chunk, 0);
        if (magic !== OUTPUT_MAGIC && magic !== INPUT_MAGIC) return undefined;
        parser = new FrameParser(magic);
      }
      parser.push(chunk.subarray(0, n));
      while (parser.next());
    }
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    // A header in the zeros that end the file (a power loss) is no sign of one found in a payload:
    // wholeLengthOf looks again where they begin, rather than at the file's start.
    return from === 0 || dataEnd(fd, end) <= from + parser!.streamOffset ? undefined : BROKEN;
  }
  if (!parser) return undefined;
  const whole = from + parser.streamOffset;
  // A tail too short to be checked as a header is one cut short only if it begins one of this channel's.
  const tail = parser.pending;
  if (tail > 0 && tail < HEADER_SIZE && !beginsHeader(fd, whole, tail, parser.magic)) return undefined;
  return whole;
}

/** Whether the `count` bytes at `position` (fewer than a header) are the start of a header a capture of `magic` can have. */
function beginsHeader(fd: number, position: number, count: number, magic: number): boolean {
  // A header that passes, with the bytes there written over its start: each field checked as far as it is there
  // (a length's missing high bytes taken as 0, its least).
  const header = new Uint8Array(HEADER_SIZE);
  writeHeader(header, 0, magic, MessageType.OpusFrame, 0, 0);
  if (readSync(fd, header, 0, count, position) !== count) return false;
  return validateHeader(header, 0, magic) === undefined;
}
