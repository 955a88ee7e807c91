import { readSync } from "node:fs";
import type { FilePlacement } from "../io/file-placement.ts";
import { decodeConfigPayload, MessageType, type ParsedMessage } from "../protocol/index.ts";
import { ByteSink, dataEnd, TAIL_BYTES, wholeLengthOf, type ByteOutput, type Ending, type Kept, type KeptUnit } from "./byte-sink.ts";
import type { FrameSink } from "./frame-sink.ts";
import { OggError } from "./ogg-error.ts";
import { CAPTURE, CRC_END, FLAGS_OFFSET, flagPage, MAX_PAGE_SIZE, OggPage, PageFlag } from "./ogg-page.ts";
import { OggPageReader } from "./ogg-page-reader.ts";
import { OggPageWriter } from "./ogg-page-writer.ts";
import { buildOpusHead, headPreSkip } from "./opus-head.ts";
import { buildOpusTags } from "./opus-tags.ts";
import { checkOpusFraming, opusPacketSamples } from "./opus-toc.ts";

export interface OggSinkOptions {
  /** Pre-skip written to OpusHead, samples at 48 kHz; 312 is libopus's lookahead at 48 kHz. */
  preSkip?: number;
  /** Audio per page before it is written out, in ms. */
  pageMs?: number;
  /** Channels when no Config arrives first; else 2 (see onPacket). */
  channels?: number;
  /** Input rate written to OpusHead when no Config arrives first. */
  inputSampleRate?: number;
  /** Stream serial number; random by default, fixed for reproducible files. */
  serial?: number;
}

/** Why an Ogg sink leaves an OpusFrame out: its TOC is invalid (or it is empty), so no page can place it. */
export const OGG_SINK_DROP = "sink_invalid_packet";

/**
 * Records the OpusFrame payloads it receives as an Ogg Opus stream (RFC 7845):
 * OpusHead and OpusTags on pages of their own, then audio pages whose granule
 * position counts the samples decoded so far at 48 kHz (the pre-skip
 * samples being among them, as RFC 7845 section 4 wants).
 *
 * Headers are written when the first packet arrives, so that a Config sent
 * first can set the channel count. A Config with other audio after that
 * (a chained source, a FIFO's next writer) ends the stream and begins the
 * next one, chained (RFC 7845 section 3): its own serial, OpusHead and
 * timeline. A packet whose TOC is invalid cannot be placed on the timeline,
 * and one whose frames do not fit its bytes would stop a player's decoding
 * of the file (checkOpusFraming): either is dropped (counted in `invalidPackets`).
 */
export class OggSink implements FrameSink {
  /** Audio packets written. */
  packets = 0;
  /** OpusFrame payloads dropped: empty or with an impossible TOC. */
  invalidPackets = 0;

  private readonly pages: OggPageWriter;
  private readonly preSkip: number;
  private readonly pageSamples: number;
  private channels: number | undefined;
  private inputSampleRate: number;
  private headersWritten = false;
  /** A stream's headers were taken by the output: the file or pipe holds a stream of this sink's. */
  private begun = false;
  /** Granule position: samples at 48 kHz decoded up to the end of the last packet. */
  private granule = 0;
  private pendingSamples = 0;
  /** Audio packets on the page being filled, handed to the output with it. */
  private pagePackets = 0;
  /** Pages being written now are a stream's headers or its end, which its reader cannot do without (ByteOutput.write). */
  private kept: KeptUnit | undefined;
  /** A page written since writeKept began was refused by the output. */
  private refused = false;
  /** Pages being written now are a stream's OpusHead and OpusTags, which a file may not end with (ByteOutput.write's `opening`). */
  private opening = false;
  /**
   * A page of this stream past its pre-skip (or its end) was written: until
   * then a file may not end with its audio pages either, none of which is
   * played (opusdec refuses a file holding a link that ends before its
   * pre-skip is over).
   */
  private heard = false;
  /** A view of the page just made, to read its granule. */
  private readonly made = new OggPage();
  private closed = false;

  private constructor(
    private readonly bytes: ByteOutput,
    options: OggSinkOptions,
  ) {
    this.preSkip = options.preSkip ?? 312;
    this.pageSamples = Math.max(1, Math.round((options.pageMs ?? 100) * 48));
    this.channels = options.channels;
    this.inputSampleRate = options.inputSampleRate ?? 48000;
    this.pages = this.stream(options.serial ?? randomSerial());
  }

  /** The page writer of the first logical stream, `serial`, and of each chained after it (chain). */
  private stream(serial: number): OggPageWriter {
    return new OggPageWriter(serial, (page) => {
      const packets = this.pagePackets;
      this.pagePackets = 0;
      const heard = this.heard || this.playsPastPreSkip(page);
      if (!this.bytes.write(page, packets, this.kept, this.opening || !heard)) {
        // Dropped whole (a FIFO's reader fell behind, or the output has failed): the stream goes on as if the page had never
        // been, with no gap in page numbers or granule, so the reader is a valid stream and a
        // player skips what it missed instead of falling further behind. (Called while the page's
        // samples are still pending.)
        this.pages.sequence--;
        this.granule -= this.pendingSamples;
        this.refused = true;
        return;
      }
      this.heard = heard;
    });
  }

  /** Checks the options before creating the file, so a bad one leaves nothing behind. */
  static open(path: string, options: OggSinkOptions = {}): OggSink {
    OggSink.check(options);
    return new OggSink(ByteSink.open(path), options);
  }

  /** A stream written to `bytes`, page by page. */
  static over(bytes: ByteOutput, options: OggSinkOptions = {}): OggSink {
    OggSink.check(options);
    return new OggSink(bytes, options);
  }

  /** Throws, naming the option, if one is out of range. */
  static check(options: OggSinkOptions): void {
    const { channels, preSkip, pageMs } = options;
    if (channels !== undefined && !isFamily0Channels(channels)) {
      throw new Error(`ogg sink: channels must be 1 or 2, got ${channels}`);
    }
    if (preSkip !== undefined && !(Number.isInteger(preSkip) && preSkip >= 0 && preSkip <= 0xffff)) {
      throw new Error(`ogg sink: preSkip must be an integer 0..65535, got ${preSkip}`);
    }
    if (pageMs !== undefined && !(pageMs > 0)) throw new Error(`ogg sink: pageMs must be > 0, got ${pageMs}`);
  }

  get name(): string {
    return this.bytes.name;
  }

  /** What the recording left out: OpusFrames no decoder takes (see the class); and what its output dropped. */
  get dropped(): Readonly<Record<string, number>> {
    return { [OGG_SINK_DROP]: this.invalidPackets, ...this.bytes.dropped };
  }

  write(message: ParsedMessage): void {
    if (this.closed) return;
    if (message.type === MessageType.Config) this.onConfig(message.payload);
    else if (message.type === MessageType.OpusFrame) this.onPacket(message.payload);
  }

  /** Closes the page being filled and hands everything to the file or pipe, so a live listener hears it now. */
  flush(): void {
    if (this.closed) return;
    if (this.pendingSamples > 0) this.closePage();
    this.bytes.flush();
  }

  /**
   * Writes the last page, flagged end-of-stream, and closes the output. A
   * stream with no audio, or less than its pre-skip, is still valid; one with
   * no audio is left out where the output holds a stream already (a link begun
   * by a Config after the last audio, a file appended to), which it would
   * only lengthen by a link of silence each time.
   */
  close(): void | Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.headersWritten || !(this.begun || this.bytes.continues)) {
        this.writeHeaders(this.channels ?? 2);
        this.endStream();
      }
    } catch (e) {
      this.bytes.close();
      throw e;
    }
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

  private onConfig(payload: Uint8Array): void {
    let config;
    try {
      config = decodeConfigPayload(payload);
    } catch {
      return; // A malformed Config is the channel's to report; the recording keeps its defaults.
    }
    const channels = isFamily0Channels(config.channels) ? config.channels : this.channels;
    if (this.headersWritten) {
      // The same audio again (a session's next Config, a reconnection): the stream goes on.
      if (channels === this.channels && config.sampleRate === this.inputSampleRate) return;
      this.chain();
    }
    this.channels = channels;
    this.inputSampleRate = config.sampleRate;
  }

  /** Ends this stream (end-of-stream page) and begins the next, chained: another serial, a timeline from 0. */
  private chain(): void {
    this.endStream();
    this.pages.begin(otherSerial(this.pages.serial));
    this.headersWritten = false;
    this.heard = false;
    this.granule = 0;
    this.pendingSamples = 0;
  }

  /** Whether a player plays some of `page`'s stream once it has that page: its granule is past the pre-skip, or it ends the stream. */
  private playsPastPreSkip(page: Uint8Array): boolean {
    const made = this.made.at(page, 0, 0);
    return made.endOfStream || made.granule > this.preSkip;
  }

  private onPacket(packet: Uint8Array): void {
    let samples: number;
    try {
      samples = opusPacketSamples(packet);
      // Such a packet would stop a player's decoding of the whole file.
      checkOpusFraming(packet);
    } catch {
      this.invalidPackets++;
      return;
    }
    try {
      // Without a Config (the output channel has none), stereo: OpusHead gives the output
      // channels, which a packet's TOC does not (RFC 7845 5.1: a stereo encoder codes packets
      // mono at low rates); a mono stream decodes to two equal channels, a stereo one is kept.
      this.writeHeaders(this.channels ?? 2);
      // A full page is closed only when the next packet comes, so that close()
      // can still flag it EOS; nothing waits for that, as bytes reach the file
      // only on flush() anyway.
      if (this.pendingSamples >= this.pageSamples || !this.pages.fits(packet.length)) this.closePage();
    } finally {
      // On its page even when writing the page before failed: the output counts it as dropped
      // when the page reaches it, instead of the packet vanishing with the error.
      this.granule += samples;
      this.pendingSamples += samples;
      this.pages.addPacket(packet, this.granule);
      this.pagePackets++;
      this.packets++;
    }
  }

  /**
   * Ends this logical stream with its end-of-stream page, which must end a
   * packet and so give the stream's last granule position (RFC 7845 section
   * 4; an empty page's granule is -1, and validators refuse it). A stream
   * that ends before its pre-skip is over (none of its audio is ever played)
   * is one RFC 7845 forbids and players refuse, as they refuse one without an
   * audio packet: it gets silence first. One whose last audio went out
   * already (flush) ends with a packet of silence trimmed whole (end
   * trimming, section 4.4): the decoded length stays what was received.
   */
  private endStream(): void {
    this.writeKept("completes", () => {
      if (this.granule === 0 || this.granule < this.preSkip) this.writeTrimmedSilence(this.preSkip);
      else if (this.pendingSamples === 0) this.writeTrimmedSilence(this.granule);
      this.pages.flushPage(true);
    });
  }

  /**
   * Writes pages a player cannot do without: dropped for a reader that is
   * behind (a FIFO's), a stream's end would be missing, or the next chained
   * stream's OpusHead, and none of that stream could be played. Whether the
   * output took them all.
   */
  private writeKept(kept: KeptUnit, write: () => void): boolean {
    this.kept = kept;
    this.refused = false;
    try {
      write();
    } finally {
      this.kept = undefined;
    }
    return !this.refused;
  }

  /**
   * What opusenc writes for empty input: 20 ms packets of silence, at least
   * one, up to `end` (the pre-skip), and a granule that trims every sample
   * past it, so the stream ends with nothing more to play. Not a received
   * frame: no count changes.
   */
  private writeTrimmedSilence(end: number): void {
    // CELT-only fullband 20 ms, one frame (TOC config 31, code 0), stereo flag as the head says; ff fe is silence.
    const silence = Uint8Array.of(this.channels === 1 ? 0xf8 : 0xfc, 0xff, 0xfe);
    do {
      this.granule = Math.min(this.granule + 960, end);
      this.pages.addPacket(silence, this.granule);
    } while (this.granule < end);
  }

  private writeHeaders(channels: number): void {
    if (this.headersWritten) return;
    // Audio after a head the output refused: its own page, refused there too, never one with the head.
    if (this.pages.pendingSegments > 0) this.closePage();
    this.headersWritten = true;
    // What the stream's head says, so that a Config saying the same later changes nothing.
    this.channels = channels;
    const head = buildOpusHead({ channels, preSkip: this.preSkip, inputSampleRate: this.inputSampleRate });
    this.opening = true;
    try {
      // RFC 7845: each header packet on a page of its own, granule 0.
      const begun = this.writeKept("begins", () => {
        this.pages.addPacket(head, 0);
        this.pages.flushPage();
      });
      if (!begun) {
        // Refused (a FIFO's reader far behind): the output refuses the stream's audio too, and the next packet begins it again.
        this.headersWritten = false;
        return;
      }
      this.begun = true;
      this.writeKept("completes", () => {
        this.pages.addPacket(buildOpusTags(), 0);
        this.pages.flushPage();
      });
    } finally {
      this.opening = false;
    }
  }

  private closePage(): void {
    this.pages.flushPage();
    this.pendingSamples = 0;
  }
}

function randomSerial(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/** A serial for the next link: RFC 3533 wants each stream's own, so never the one before. */
function otherSerial(previous: number): number {
  const serial = randomSerial();
  return serial === previous ? (serial + 1) >>> 0 : serial;
}

/** OpusHead mapping family 0, the one written here, carries mono or stereo only. */
function isFamily0Channels(channels: number): boolean {
  return channels === 1 || channels === 2;
}

/**
 * Where an Ogg file's whole pages end (ByteSink's WholeLength): read page by
 * page, up to a last page cut short, or one whose CRC fails (its bytes never
 * all reached the disk), or to zero bytes that end it (wholeLengthOf).
 * Undefined for bytes that are not Ogg pages end to end (damage before the
 * last page, another format): not cut there. Players pass over half a page,
 * but the agent's own source (strict) stops at it. A last link with no audio
 * page (a stream cut inside its headers, or right after them), or whose audio
 * ends within its pre-skip (none of it played), is cut whole, from its
 * OpusHead page: a stream appended would begin in the group of BOS pages,
 * multiplexed with them rather than chained after (RFC 3533), and opusdec
 * refuses a whole file that holds a link without audio, or one that ends
 * before its pre-skip is over. A stream kept that has no end-of-stream page
 * (its writer killed, the power lost) has its last page marked as one, if a
 * packet ends on it: RFC 3533 wants each link's streams ended before the
 * next begins, and a validator refuses the chain otherwise. A file over
 * TAIL_BYTES is read from the first page in its last TAIL_BYTES (the CRC
 * tells a page from bytes in a body that read as one), from its start only
 * if those pages cannot tell whether its last link is cut whole.
 */
export function wholeOggLength(path: string): Kept | undefined {
  return wholeLengthOf(path, wholePages);
}

/** A stream's last page seen, while none has ended it: where it is, and whether a packet ends on it. */
interface LastPage {
  at: number;
  size: number;
  endsPacket: boolean;
}

/** What of the Ogg pages in `fd`'s first `end` bytes is kept (see wholeOggLength); undefined when they are not Ogg pages. */
function wholePages(fd: number, end: number): Kept | undefined {
  if (end > TAIL_BYTES) {
    const from = firstPageIn(fd, end - TAIL_BYTES, end);
    const kept = from === undefined ? undefined : pagesFrom(fd, from, end);
    if (kept !== UNTOLD) return kept;
  }
  return pagesFrom(fd, 0, end) as Kept | undefined;
}

/** The largest pre-skip an OpusHead can give (a u16): a granule past it is audio past any link's pre-skip. */
const MAX_PRE_SKIP = 0xffff;
/** pagesFrom's answer when, begun inside the last link, it could not tell whether that link is cut whole. */
const UNTOLD = null;

/**
 * pagesFrom `from`, the offset of a page (0, or one found by firstPageIn):
 * begun after the file's start, UNTOLD when its pages hold no link's start
 * (a group of BOS pages at `from` may be the end of one begun before it), no
 * end-of-stream page and no granule past any pre-skip, as the last link's
 * beginning, before `from`, would then decide whether it is cut whole. Only
 * the streams seen from `from` on are marked ended.
 */
function pagesFrom(fd: number, from: number, end: number): Kept | undefined | typeof UNTOLD {
  const pages = new OggPageReader();
  const chunk = new Uint8Array(MAX_PAGE_SIZE);
  let whole = from;
  /** Where the BOS pages the whole ones end with begin, if they do. */
  let group: number | undefined;
  /** Where the last link begins while no page of it has audio past its pre-skip (a granule past it) or ends it. */
  let bare: number | undefined;
  /** The last link's pre-skip, as its OpusHead gives it (0 for a stream of another codec). */
  let preSkip = 0;
  /** Whether the pages tell the last link's state (always, from the file's start). */
  let told = from === 0;
  /** A page read whose CRC failed: only the last page may be so. */
  let bad = false;
  /** The last link's streams not ended yet, by serial; and those of the links before it, which none will end now. */
  let open = new Map<number, LastPage>();
  const unended: LastPage[] = [];
  // The last link cut whole (bare), the one before it ends the file.
  const kept = (length: number): Kept | typeof UNTOLD =>
    told ? { length, endings: endingsOf(fd, [...unended, ...(bare === undefined ? open.values() : [])]) } : UNTOLD;
  try {
    for (let at = from, n; at < end && (n = readSync(fd, chunk, 0, Math.min(chunk.length, end - at), at)) > 0; at += n) {
      pages.push(chunk.subarray(0, n));
      for (let page; (page = pages.next()); ) {
        if (bad) return undefined;
        bad = !page.crcValid();
        if (bad) continue;
        const offset = from + page.streamOffset;
        if (page.beginOfStream && group === undefined) {
          unended.push(...open.values());
          open = new Map();
        }
        group = page.beginOfStream ? (group ?? offset) : undefined;
        if (page.beginOfStream) {
          bare = group;
          preSkip = headPreSkip(page.bytes.subarray(page.bodyOffset, page.bodyOffset + page.bodySize)) ?? 0;
        } else if (page.granule > preSkip || page.endOfStream) bare = undefined;
        // A group of BOS pages that the walk begins with may have begun before it: its start is not told.
        told ||= (page.beginOfStream && group !== from) || page.endOfStream || page.granule > MAX_PRE_SKIP;
        if (page.endOfStream) open.delete(page.serial);
        else open.set(page.serial, { at: offset, size: page.size, endsPacket: page.segments > 0 && page.lacing(page.segments - 1) < 255 });
        whole = from + pages.streamOffset;
      }
    }
  } catch (e) {
    if (!(e instanceof OggError)) throw e;
    // Zeros where a page should begin, to the end: the pages before them are whole by their CRC,
    // a last one whose body ends in zeros too (wholeLengthOf would cut where its zeros begin).
    return dataEnd(fd, end) <= from + e.offset ? kept(bare ?? whole) : undefined;
  }
  const read = from + pages.streamOffset;
  const tail = end - read;
  // A tail too short to be checked as a page is one cut short only if it begins "OggS", or is zeros.
  if (tail > 0 && tail < CAPTURE.length) {
    const begun = new Uint8Array(tail);
    const cut = readSync(fd, begun, 0, tail, read) === tail && begun.every((byte, i) => byte === CAPTURE[i]);
    if (!cut && dataEnd(fd, end) > read) return undefined;
  }
  return kept(bare ?? whole);
}

/** Where the first whole page with a valid CRC between `from` and `end` begins; undefined if none does. */
function firstPageIn(fd: number, from: number, end: number): number | undefined {
  const bytes = new Uint8Array(end - from);
  if (readSync(fd, bytes, 0, bytes.length, from) !== bytes.length) return undefined;
  const pages = new OggPageReader(true);
  pages.push(bytes);
  for (let page; (page = pages.next()); ) {
    if (page.crcValid()) return from + page.streamOffset;
    pages.resync();
  }
  return undefined;
}

/**
 * Each of `last` pages that a packet ends on, marked as its stream's end: its
 * header from the flags to the CRC, read again and sealed anew, to write over
 * the old in one write. One on which no packet ends is left (marking it would
 * end its stream inside a packet).
 */
function endingsOf(fd: number, last: readonly LastPage[]): Ending[] {
  const endings: Ending[] = [];
  for (const { at, size, endsPacket } of last) {
    if (!endsPacket) continue;
    const page = new Uint8Array(size);
    if (readSync(fd, page, 0, size, at) !== size) continue;
    flagPage(page, PageFlag.EndOfStream);
    endings.push({ at: at + FLAGS_OFFSET, bytes: page.subarray(FLAGS_OFFSET, CRC_END) });
  }
  return endings;
}
