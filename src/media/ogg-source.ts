import { MAX_PAYLOAD, OPUS_SAMPLE_RATES, type AudioConfig } from "../protocol/index.ts";
import { openByteSource, type ByteSource } from "./byte-source.ts";
import { escaped } from "./file-format.ts";
import type { FrameSource, SourceFrame, SourceReport } from "./frame-source.ts";
import { OggError } from "./ogg-error.ts";
import type { OggPage } from "./ogg-page.ts";
import { OggPacketReader, type OggPacket } from "./ogg-packet-reader.ts";
import { OggPageReader } from "./ogg-page-reader.ts";
import { isOpusHead, parseOpusHead, whyNotCarried } from "./opus-head.ts";
import { isOpusTags } from "./opus-tags.ts";
import { opusPacketSamples } from "./opus-toc.ts";

export interface OggSourceOptions {
  /**
   * Skip (and count in `skippedPages`) pages with a bad CRC, read on past
   * pages missing from our stream (counted in `missingPages`), and drop a
   * page that comes again (counted in `repeatedPages`), instead of failing.
   */
  lenient?: boolean;
  /** Told of what is skipped, found missing or cut short (the role's logger, which rate-limits it). */
  report?: SourceReport;
}

type Stage = "head" | "tags" | "audio";

/** What an Ogg source counts of what it left out (lenient: of damage it read past). */
export const OGG_SOURCE_COUNTS = ["skipped_pages", "missing_pages", "repeated_pages", "other_stream_pages", "skipped_bytes"] as const;
type OggSourceCount = (typeof OGG_SOURCE_COUNTS)[number];

/**
 * Lenient: how many of our stream's last pages are remembered (number and CRC), to tell a page
 * that comes again: 5 s of a live encoder's pages of one 20 ms packet each (opusenc --max-delay
 * 20), about 4 minutes of opusenc's default pages of up to a second.
 */
export const REPEAT_WINDOW = 256;

/**
 * Lenient: how many other streams' serials are remembered, to tell a bad page of theirs from one
 * of ours. Past that (a file multiplexing more), a bad page is taken as possibly ours, as before.
 */
const OTHER_SERIALS = 64;

/**
 * Reads an Ogg Opus file (RFC 7845) and yields each audio packet as one
 * frame, timed by the packets' TOC durations. It reads the first Opus
 * logical stream and each Opus stream chained after it (RFC 3533: a new
 * stream that begins after the previous one's last page; an encoder restarted
 * into the same FIFO makes one), with `audioConfig` following each OpusHead
 * and the timeline running on. Pages of other streams (multiplexed with ours,
 * or a chained stream that is not Opus) are counted and skipped.
 *
 * Damage is an error naming its offset, unless lenient: a page with a bad
 * CRC, and a gap in our stream's page sequence numbers (a page lost on the
 * way). Lenient reads on past both, drops the packets they touched, counts
 * them and tells `report`; it drops a page of ours that comes again (a page
 * written twice), which would send its packets twice.
 */
export class OggSource implements FrameSource {
  /** Pages dropped for a bad CRC (only in lenient mode). */
  skippedPages = 0;
  /** Pages of other logical streams, ignored. */
  otherStreamPages = 0;
  /** Pages of our stream that its page sequence numbers say never arrived (only in lenient mode). */
  missingPages = 0;
  /** Pages of our stream that came again, the same number and bytes as a page read: dropped (only in lenient mode). */
  repeatedPages = 0;
  /** Bytes passed over that began no page: a damaged page's, or bytes between pages (only in lenient mode). */
  skippedBytes = 0;
  audioConfig: Partial<AudioConfig> | undefined;
  preSkip: number | undefined;

  /** Lenient, it seeks the next page past damage (OggPageReader). */
  private readonly pages: OggPageReader;
  private readonly packets = new OggPacketReader(MAX_PAYLOAD);
  private readonly frame: SourceFrame = { payload: new Uint8Array(0), timeMs: 0 };
  private serial: number | undefined;
  /** Start of the first non-Opus stream, for the error when no Opus stream follows. */
  private foreign: string | undefined;
  private stage: Stage = "head";
  /** Samples at 48 kHz before the next packet. */
  private samples = 0;
  /** Samples of the current stream's audio packets so far. */
  private streamSamples = 0;
  /** The granule of the current stream's end-of-stream page, once that page is read. */
  private endGranule: number | undefined;
  /** The granule of the current stream's last page read that ends a packet (-1: none): where the packets ending on the next begin. */
  private lastGranule = -1;
  /**
   * Where the packet read next begins on the stream's timeline, once its end-of-stream page is read:
   * the granule of the page before it (RFC 7845 4.4, as libopusfile counts), not the samples read,
   * which differ for a stream that starts past zero (joined mid-broadcast) or below it (`ffmpeg -ss` with `-c copy`).
   */
  private endPageAt = 0;
  private endOfStream = false;
  /** The bytes have ended; the input has once what the page reader held is read too. */
  private bytesEnded = false;
  private inputEnded = false;
  private failure: Error | undefined;
  /**
   * Pages that end at or below this stream offset had their CRC checked, and found good, on an
   * earlier pass of the same bytes (ByteSource.replaysSameBytes): a --loop over a file held in
   * memory checks each page once, not once a pass.
   */
  private checkedBelow = 0;
  /** This pass: the end of the last page found good, and where the first bad one (lenient) began. */
  private goodEnd = 0;
  private firstBad = Infinity;
  /** The sequence number our stream's next page should carry (RFC 3533: one more than the last). */
  private nextSequence: number | undefined;
  /** Our stream's last REPEAT_WINDOW pages read, by sequence number modulo REPEAT_WINDOW: number (-1: none) and CRC. */
  private readonly readSequences = new Float64Array(REPEAT_WINDOW).fill(-1);
  private readonly readCrcs = new Uint32Array(REPEAT_WINDOW);
  /** Pages skipped for a bad CRC since our stream's last page: a gap they explain is counted already. */
  private skippedSinceOurs = 0;
  /** Serials of the other streams whose good pages were read since ours began (at most OTHER_SERIALS). */
  private readonly otherSerials = new Set<number>();
  /** Since our stream began: a page that is not a BOS page was seen, so the BOS group is over. */
  private pastBosGroup = false;
  private toldOtherStream = false;
  /** The page reader's skipped bytes this pass, as far as counted; whether the last page was a bad one. */
  private passedBefore = 0;
  private afterBadPage = false;

  private constructor(
    private readonly bytes: ByteSource,
    private readonly lenient: boolean,
    private readonly report: SourceReport | undefined,
  ) {
    this.pages = new OggPageReader(lenient);
  }

  static async open(path: string, options: OggSourceOptions = {}): Promise<OggSource> {
    return OggSource.from(await openByteSource(path), options);
  }

  /** Reads from any ByteSource (a pipe, or chunks cut on purpose by a test). */
  static from(bytes: ByteSource, options: OggSourceOptions = {}): OggSource {
    return new OggSource(bytes, options.lenient ?? false, options.report);
  }

  get name(): string {
    return this.bytes.name;
  }

  get counts(): Readonly<Record<OggSourceCount, number>> {
    return { skipped_pages: this.skippedPages, missing_pages: this.missingPages, repeated_pages: this.repeatedPages, other_stream_pages: this.otherStreamPages, skipped_bytes: this.skippedBytes };
  }

  next(): SourceFrame | undefined {
    if (this.failure) throw this.failure;
    try {
      for (;;) {
        const packet = this.packets.next();
        if (packet) {
          if (this.onPacket(packet)) return this.frame;
          continue;
        }
        const page = this.pages.next();
        if (!page) return undefined;
        this.onPage(page);
      }
    } catch (e) {
      throw this.fail(e);
    }
  }

  async fill(): Promise<boolean> {
    if (this.failure) throw this.failure;
    if (this.inputEnded) return false;
    const chunk = this.bytesEnded ? null : await this.bytes.read();
    if (chunk === null) {
      this.bytesEnded = true;
      try {
        // Lenient: pages may lie in what was held for a page that never came whole.
        if (this.pages.finish()) return true;
        this.inputEnded = true;
        this.checkEnd();
      } catch (e) {
        throw this.fail(e);
      }
      return false;
    }
    this.pages.push(chunk);
    return true;
  }

  rewind(): boolean {
    if (!this.bytes.rewindable) return false;
    // Pages are met in order: every one below both marks was checked and good.
    if (this.bytes.replaysSameBytes) this.checkedBelow = Math.max(this.checkedBelow, Math.min(this.goodEnd, this.firstBad));
    this.goodEnd = 0;
    this.bytes.rewind();
    this.pages.reset();
    this.passedBefore = 0;
    this.afterBadPage = false;
    this.beginStream(undefined);
    this.foreign = undefined;
    this.samples = 0;
    this.bytesEnded = false;
    this.inputEnded = false;
    this.failure = undefined;
    return true;
  }

  async close(): Promise<void> {
    await this.bytes.close();
  }

  private onPage(page: OggPage): void {
    const end = page.streamOffset + page.size;
    if (end > this.checkedBelow) {
      if (!page.crcValid()) {
        if (!this.lenient) throw new OggError("bad CRC in page", page.streamOffset);
        this.passedOver(page.streamOffset);
        this.firstBad = Math.min(this.firstBad, page.streamOffset);
        this.skippedPages++;
        // One that reads as another stream's (multiplexed with ours) is that stream's: a gap in ours
        // is pages of ours missing. One of ours, or of no stream read (its serial what was damaged), may be it.
        if (!this.otherSerials.has(page.serial)) this.skippedSinceOurs++;
        this.report?.("warn", "skipped a page with a bad CRC", { source: this.name, offset: page.streamOffset, skipped_pages: this.skippedPages });
        if (page.serial === this.serial) this.packets.lost();
        // Its length may be what was damaged: the next page is sought from its second byte.
        this.pages.resync();
        this.afterBadPage = true;
        return;
      }
      this.goodEnd = end;
    }
    this.passedOver(page.streamOffset);
    if (this.serial === undefined) this.chooseStream(page);
    else if (page.beginOfStream && (this.endOfStream || this.pastBosGroup) && isOpusHead(bodyOf(page))) this.chain(page);
    // RFC 3533: the BOS pages of streams multiplexed together all come before any other page, so
    // one after that begins a stream chained after ours, even one whose end-of-stream page is missing.
    if (!page.beginOfStream) this.pastBosGroup = true;
    // A page of ours again, before our end or after it (our end-of-stream page again, or one before it).
    if (page.serial === this.serial && this.repeated(page)) return this.dropRepeated(page);
    // Other streams multiplexed with ours, and what follows our end that is not a new Opus stream.
    if (page.serial !== this.serial || this.endOfStream) {
      this.otherStreamPages++;
      if (page.serial !== this.serial && this.otherSerials.size < OTHER_SERIALS) this.otherSerials.add(page.serial);
      if (!this.toldOtherStream) {
        this.toldOtherStream = true;
        this.report?.("info", "skipping the pages of another logical stream", { source: this.name, serial: serialName(page.serial), offset: page.streamOffset });
      }
      return;
    }
    this.checkSequence(page);
    const orphans = this.packets.orphanTails;
    this.packets.push(page);
    if (this.packets.orphanTails > orphans) {
      this.report?.("info", "dropped the end of a packet begun before this page: its start is not in the stream", { source: this.name, offset: page.streamOffset });
    }
    this.endOfStream = page.endOfStream;
    // A granule below zero other than -1 (none) is read as libopusfile reads it, unsigned: past every
    // sample, so it trims nothing, where taken as signed it trimmed the page's packets whole, unsaid.
    if (page.endOfStream && page.granule >= 0) {
      this.endGranule = page.granule;
      // The headers' pages carry granule 0: an end's page that is the first audio page counts from there.
      this.endPageAt = this.lastGranule === -1 ? this.streamSamples : this.lastGranule;
    }
    if (page.granule !== -1) this.lastGranule = page.granule;
  }

  /**
   * Lenient: counts the bytes passed over up to offset `at` (a page, or the
   * input's end), and tells of them unless they were a bad page's, told already.
   */
  private passedOver(at: number): void {
    const passed = this.pages.skippedBytes - this.passedBefore;
    const afterBadPage = this.afterBadPage;
    this.afterBadPage = false;
    if (passed === 0) return;
    this.passedBefore = this.pages.skippedBytes;
    this.skippedBytes += passed;
    if (!afterBadPage) {
      this.report?.("warn", "passed over bytes that begin no page", { source: this.name, offset: at - passed, bytes: passed, skipped_bytes: this.skippedBytes });
    }
  }

  /**
   * A page of our stream must carry the sequence number after the last one's: a gap means pages
   * were lost on the way (a damaged copy, a dropped write), and the packets on them with them.
   */
  private checkSequence(page: OggPage): void {
    const expected = this.nextSequence;
    const skipped = this.skippedSinceOurs;
    const slot = page.sequence % REPEAT_WINDOW;
    this.readSequences[slot] = page.sequence;
    this.readCrcs[slot] = page.crc;
    this.nextSequence = (page.sequence + 1) >>> 0;
    this.skippedSinceOurs = 0;
    if (expected === undefined || page.sequence === expected) return;
    // A stream joined mid-broadcast (RFC 7845 section 3): its headers pasted in front of audio
    // pages numbered on from the broadcast's. Not a loss: read on from the first packet begun here.
    if (this.stage === "audio" && this.streamSamples === 0 && skipped === 0 && !this.packets.open) {
      this.packets.lost();
      this.report?.("info", "audio pages numbered on from a broadcast joined mid-way", { source: this.name, offset: page.streamOffset, sequence: page.sequence });
      return;
    }
    const jump = (page.sequence - expected) >>> 0;
    const forward = jump < 0x80000000;
    // Pages skipped for a bad CRC are the likeliest to be the ones missing: those are counted already.
    const missing = forward ? jump - Math.min(jump, skipped) : 0;
    if (!this.lenient) {
      const what = forward ? `${jump} page(s) missing` : "out of order";
      throw new OggError(`page sequence jumps from ${(expected - 1) >>> 0} to ${page.sequence} in stream ${serialName(page.serial)} (${what})`, page.streamOffset);
    }
    this.packets.lost();
    if (!forward || missing > 0) {
      this.missingPages += missing;
      this.report?.("warn", forward ? "pages missing from the stream" : "pages out of order in the stream", {
        source: this.name,
        serial: serialName(page.serial),
        offset: page.streamOffset,
        expected_sequence: expected,
        sequence: page.sequence,
        missing,
        missing_pages: this.missingPages,
      });
    }
  }

  /**
   * Lenient: `page` is one of our stream's last REPEAT_WINDOW pages read again, the same number
   * and CRC: written twice. Any other page numbered back is read on from, as the writer counting
   * again.
   */
  private repeated(page: OggPage): boolean {
    if (!this.lenient) return false;
    const slot = page.sequence % REPEAT_WINDOW;
    return this.readSequences[slot] === page.sequence && this.readCrcs[slot] === page.crc;
  }

  /** Its packets were read already: read again they would be sent twice. */
  private dropRepeated(page: OggPage): void {
    this.repeatedPages++;
    this.report?.("warn", "dropped a page that came again", {
      source: this.name,
      serial: serialName(page.serial),
      offset: page.streamOffset,
      sequence: page.sequence,
      repeated_pages: this.repeatedPages,
    });
  }

  /**
   * Logical streams start with a group of BOS pages, each holding one header
   * packet; ours is the first whose packet is an OpusHead.
   */
  private chooseStream(page: OggPage): void {
    if (!page.beginOfStream) {
      throw this.notOpus(this.foreign ?? `page at byte ${page.streamOffset} does not begin a stream`);
    }
    const body = bodyOf(page);
    if (isOpusHead(body)) {
      this.serial = page.serial;
      this.nextSequence = undefined;
      return;
    }
    this.foreign ??= `its first stream (at byte ${page.streamOffset}) begins with "${escaped(body.subarray(0, 8))}"`;
  }

  /** Our stream ended and `page` begins a new Opus stream: read it next, from its OpusHead. */
  private chain(page: OggPage): void {
    if (!this.endOfStream) {
      // What a killed encoder leaves before the next one's stream (`cat cut.opus new.opus`).
      this.report?.("warn", "stream ended without its end-of-stream page; reading the stream chained after it", {
        source: this.name,
        serial: serialName(this.serial!),
        next_serial: serialName(page.serial),
        offset: page.streamOffset,
        ...(this.packets.open ? { cut_packet_offset: this.packets.openOffset } : {}),
      });
    }
    this.beginStream(page.serial);
  }

  /** What each stream read starts from: a pass from the top (no serial yet) or a chained stream. */
  private beginStream(serial: number | undefined): void {
    this.serial = serial;
    this.nextSequence = undefined;
    this.readSequences.fill(-1);
    this.skippedSinceOurs = 0;
    this.otherSerials.clear();
    this.pastBosGroup = false;
    this.stage = "head";
    this.endOfStream = false;
    this.streamSamples = 0;
    this.endGranule = undefined;
    this.lastGranule = -1;
    this.packets.reset();
  }

  /** Returns true when the packet became `this.frame`. */
  private onPacket(packet: OggPacket): boolean {
    switch (this.stage) {
      case "head": {
        const head = this.located(packet, parseOpusHead);
        const refused = whyNotCarried(head);
        if (refused) throw new OggError(refused, packet.streamOffset);
        this.preSkip = head.preSkip;
        this.audioConfig = { sampleRate: configRate(head.inputSampleRate), channels: head.channels };
        this.stage = "tags";
        return false;
      }
      case "tags":
        this.stage = "audio";
        if (isOpusTags(packet.data)) return false;
        if (!this.lenient) throw new OggError("expected an OpusTags packet", packet.streamOffset);
        // Its page was damaged and skipped: the audio after it is all there.
        this.report?.("warn", "no OpusTags packet after the OpusHead; reading on from the audio", { source: this.name, offset: packet.streamOffset });
        break;
      case "audio":
        // Lenient: a header page that came again from further back than REPEAT_WINDOW. No audio
        // packet begins so: a TOC of "O" and a count byte of "p" are 48 frames of 20 ms, over
        // Opus's 120 ms.
        if (this.lenient && (isOpusTags(packet.data) || isOpusHead(packet.data))) {
          this.report?.("warn", "skipped an Opus header packet among the audio packets", { source: this.name, offset: packet.streamOffset });
          return false;
        }
        break;
    }
    if (packet.size > MAX_PAYLOAD) {
      throw new OggError(`audio packet of ${packet.size} bytes exceeds ${MAX_PAYLOAD}`, packet.streamOffset);
    }
    const samples = this.located(packet, opusPacketSamples);
    // A packet the stream's end trims whole (the silence a recorder ends with once its last
    // audio went out) holds nothing to play: a decoder discards it, so it is not sent.
    if (this.endGranule !== undefined) {
      if (this.endPageAt >= this.endGranule) return false;
      this.endPageAt += samples;
    }
    this.streamSamples += samples;
    const config = this.audioConfig!;
    // Opus counts a packet's samples at 48 kHz; a Config counts them at its own rate.
    config.frameSize ??= (samples * config.sampleRate!) / 48000;
    this.frame.payload = packet.data;
    this.frame.timeMs = this.samples / 48;
    this.frame.durationMs = samples / 48;
    this.samples += samples;
    return true;
  }

  /** What the input's end says of the stream: called once the page reader's finish() found nothing held. */
  private checkEnd(): void {
    this.passedOver(this.pages.streamOffset);
    // A packet a lost page cut (lenient) is counted with that page: the input ending after it is no truncation.
    if (this.packets.open && !this.packets.interrupted) {
      throw new OggError("truncated: input ends inside the packet that starts", this.packets.openOffset);
    }
    if (this.serial === undefined) throw this.notOpus(this.foreign ?? "it holds no OpusHead");
    if (this.stage === "head" || this.stage === "tags") {
      throw new Error(`ogg source ${this.name}: input ends inside the Opus headers`);
    }
  }

  /** Runs `parse` on the packet, turning its error into one naming the packet's offset. */
  private located<T>(packet: OggPacket, parse: (data: Uint8Array) => T): T {
    try {
      return parse(packet.data);
    } catch (e) {
      throw new OggError((e as Error).message, packet.streamOffset);
    }
  }

  private notOpus(reason: string): Error {
    return new Error(`ogg source ${this.name} is not an Ogg Opus stream: ${reason}`);
  }

  private fail(e: unknown): Error {
    const error =
      e instanceof OggError ? new Error(`ogg source ${this.name}: ${e.message}`, { cause: e }) : (e as Error);
    this.failure = error;
    return error;
  }
}

/** A stream's serial number as Ogg tools print it (opusinfo: "serial: 5a071519"). */
function serialName(serial: number): string {
  return serial.toString(16).padStart(8, "0");
}

function bodyOf(page: OggPage): Uint8Array {
  return page.bytes.subarray(page.bodyOffset, page.bodyOffset + page.bodySize);
}

/**
 * The rate a Config names for a stream whose OpusHead gives `inputRate`: that
 * rate when an Opus decoder runs at it, else 48 kHz. OpusHead's rate is only
 * the encoder's input (RFC 7845 5.1): a 44.1 kHz source gives 44100, at which
 * no Opus decoder runs, and 0 means unknown.
 */
function configRate(inputRate: number): number {
  return (OPUS_SAMPLE_RATES as readonly number[]).includes(inputRate) ? inputRate : 48000;
}
