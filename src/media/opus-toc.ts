/**
 * What the TOC byte of an Opus packet says (RFC 6716 section 3.1):
 *   bits 7..3 config (mode, bandwidth, frame duration), bit 2 stereo,
 *   bits 1..0 code: 0 one frame, 1 two equal frames, 2 two frames,
 *   3 a count of frames in the next byte (its low 6 bits).
 * Durations are in samples at 48 kHz, the Ogg Opus granule rate.
 */

/** Samples per frame for each config: SILK 10/20/40/60 ms, Hybrid 10/20 ms, CELT 2.5/5/10/20 ms. */
const FRAME_SAMPLES = Uint16Array.from({ length: 32 }, (_, config) => {
  if (config < 12) return [480, 960, 1920, 2880][config & 3]!;
  if (config < 16) return [480, 960][config & 1]!;
  return [120, 240, 480, 960][config & 3]!;
});

/** RFC 6716: a packet carries at most 120 ms of audio. */
const MAX_PACKET_SAMPLES = 5760;

export function opusFrameSamples(toc: number): number {
  return FRAME_SAMPLES[toc >> 3]!;
}

/** Duration of the packet in samples at 48 kHz. Throws for a packet whose TOC cannot be valid. */
export function opusPacketSamples(packet: Uint8Array): number {
  if (packet.length === 0) throw new Error("empty Opus packet (one has at least its TOC byte, RFC 6716 3.1)");
  const toc = packet[0]!;
  let frames: number;
  switch (toc & 3) {
    case 0:
      frames = 1;
      break;
    case 1:
    case 2:
      frames = 2;
      break;
    default:
      if (packet.length < 2) throw new Error("Opus packet with code 3 lacks its frame count byte");
      frames = packet[1]! & 0x3f;
      if (frames === 0) throw new Error("Opus packet with code 3 announces 0 frames");
  }
  const samples = frames * opusFrameSamples(toc);
  if (samples > MAX_PACKET_SAMPLES) throw new Error(`Opus packet lasts ${samples / 48} ms, more than 120 ms`);
  return samples;
}

/** RFC 6716 section 3.2.1: no frame holds more than 1275 bytes. */
const MAX_FRAME_BYTES = 1275;

/**
 * Throws for a packet, its TOC valid (opusPacketSamples), whose frames do not
 * fit its bytes by RFC 6716 section 3.4's rules R2-R7: they must take its
 * bytes exactly, none over 1275 bytes. libopus refuses such a packet and
 * `opusdec` stops decoding at it, so an Ogg file must not hold one; the wire
 * carries it as any payload.
 */
export function checkOpusFraming(packet: Uint8Array): void {
  const code = packet[0]! & 3;
  // The bytes left for the frames, as the count byte, padding and frame lengths are taken off.
  let left = packet.length - 1;
  /** The last frame's bytes (CBR code 3: each frame's), what the lengths given leave. */
  let last: number;
  if (code === 0) {
    last = left;
  } else if (code === 1) {
    if (left % 2 !== 0) throw new Error(`Opus packet of code 1 (two frames of one size) has an odd ${left} bytes after its TOC`);
    last = left / 2;
  } else if (code === 2) {
    const first = frameLength(packet, 1, packet.length);
    left -= first.bytes;
    if (first.length > left) throw new Error(`Opus packet of code 2: its first frame of ${first.length} bytes runs past the packet's end`);
    last = left - first.length;
  } else {
    const count = packet[1]!;
    const frames = count & 0x3f;
    let at = 2;
    left -= 1;
    if (count & 0x40) {
      // Padding: each length byte of 255 adds 254 and another byte follows (RFC 6716 section 3.2.5).
      for (let more = true; more; ) {
        if (at >= packet.length) throw new Error("Opus packet of code 3: its padding length runs past the packet's end");
        const byte = packet[at++]!;
        more = byte === 255;
        left -= 1 + (more ? 254 : byte);
      }
      if (left < 0) throw new Error("Opus packet of code 3: its padding runs past the packet's end");
    }
    if (count & 0x80) {
      // VBR: the length of every frame but the last.
      for (let i = 1; i < frames; i++) {
        const frame = frameLength(packet, at, at + left);
        at += frame.bytes;
        left -= frame.bytes;
        if (frame.length > left) throw new Error(`Opus packet of code 3: frame ${i} of ${frame.length} bytes runs past the packet's end`);
        left -= frame.length;
      }
      last = left;
    } else {
      if (left % frames !== 0) throw new Error(`Opus packet of code 3 (${frames} frames of one size) has ${left} bytes of frames, not a multiple of ${frames}`);
      last = left / frames;
    }
  }
  if (last > MAX_FRAME_BYTES) throw new Error(`Opus packet has a frame of ${last} bytes, more than ${MAX_FRAME_BYTES}`);
}

/** A frame length at `at` (RFC 6716 section 3.2.1), before `end`: one byte below 252, else two. */
function frameLength(packet: Uint8Array, at: number, end: number): { length: number; bytes: number } {
  if (at >= end) throw new Error("Opus packet lacks a frame length");
  const first = packet[at]!;
  if (first < 252) return { length: first, bytes: 1 };
  if (at + 1 >= end) throw new Error("Opus packet's two-byte frame length runs past the packet's end");
  return { length: first + 4 * packet[at + 1]!, bytes: 2 };
}
