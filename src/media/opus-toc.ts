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
export const MAX_PACKET_SAMPLES = 5760;

export function opusFrameSamples(toc: number): number {
  return FRAME_SAMPLES[toc >> 3]!;
}

/** 1 or 2, from the stereo bit. */
export function opusPacketChannels(packet: Uint8Array): number {
  return packet.length > 0 && (packet[0]! & 0x04) !== 0 ? 2 : 1;
}

/** Duration of the packet in samples at 48 kHz. Throws for a packet whose TOC cannot be valid. */
export function opusPacketSamples(packet: Uint8Array): number {
  if (packet.length === 0) throw new Error("empty Opus packet");
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
