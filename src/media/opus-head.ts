/**
 * The OpusHead identification header, first packet of an Ogg Opus stream
 * (RFC 7845 section 5.1), little-endian:
 *   0 "OpusHead" | 8 version u8 | 9 channels u8 | 10 pre-skip u16
 *   12 input sample rate u32 | 16 output gain i16 (Q7.8 dB) | 18 mapping family u8
 *   family != 0: 19 stream count u8 | 20 coupled count u8 | 21 mapping[channels]
 */

export interface OpusHead {
  version: number;
  channels: number;
  /** Samples at 48 kHz to drop from the start of the decoded audio. */
  preSkip: number;
  /** Rate of the original input, informational; 0 when unknown. */
  inputSampleRate: number;
  /** Q7.8 dB. */
  outputGain: number;
  mappingFamily: number;
  /**
   * A family other than 0 whose table maps one Opus stream straight onto 1 or
   * 2 channels (one stream, coupled when stereo, channels in order): its
   * packets are plain Opus packets, as family 0's.
   */
  singleStream?: boolean;
}

const MAGIC = [0x4f, 0x70, 0x75, 0x73, 0x48, 0x65, 0x61, 0x64]; // "OpusHead"
const FAMILY0_SIZE = 19;

export function isOpusHead(packet: Uint8Array): boolean {
  return packet.length >= 8 && MAGIC.every((b, i) => packet[i] === b);
}

/** The pre-skip an OpusHead packet gives (samples at 48 kHz), read from its first bytes; undefined for anything else. */
export function headPreSkip(packet: Uint8Array): number | undefined {
  return isOpusHead(packet) && packet.length >= 12 ? packet[10]! | (packet[11]! << 8) : undefined;
}

/** Parses an OpusHead packet; throws with the reason when it is not a usable one. */
export function parseOpusHead(packet: Uint8Array): OpusHead {
  if (!isOpusHead(packet)) throw new Error("packet is not an OpusHead");
  if (packet.length < FAMILY0_SIZE) throw new Error(`OpusHead of ${packet.length} bytes is too short`);
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const head: OpusHead = {
    version: view.getUint8(8),
    channels: view.getUint8(9),
    preSkip: view.getUint16(10, true),
    inputSampleRate: view.getUint32(12, true),
    outputGain: view.getInt16(16, true),
    mappingFamily: view.getUint8(18),
  };
  // RFC 7845: the high nibble is the major version; only 0 is understood.
  if (head.version >> 4 !== 0) throw new Error(`unsupported OpusHead version ${head.version}`);
  if (head.channels === 0) throw new Error("OpusHead announces 0 channels");
  if (head.mappingFamily === 0 && head.channels > 2) {
    throw new Error(`OpusHead mapping family 0 with ${head.channels} channels`);
  }
  if (head.mappingFamily !== 0 && packet.length < 21 + head.channels) {
    throw new Error("OpusHead is too short for its channel mapping table");
  }
  if (head.mappingFamily !== 0 && head.channels <= 2) {
    const streams = view.getUint8(19);
    const coupled = view.getUint8(20);
    const identity = Array.from({ length: head.channels }, (_, i) => view.getUint8(21 + i) === i).every(Boolean);
    head.singleStream = streams === 1 && coupled === head.channels - 1 && identity;
  }
  return head;
}

/**
 * Why the wire cannot carry a stream with this head, or undefined when it
 * can. A Config names only rate, channels and frame size: one Opus stream,
 * mono or stereo, as mapping family 0 has it. Family 1 or 255 maps several
 * coupled streams onto more channels in every packet, which no family-0
 * sink or JetKVM peer can decode.
 */
export function whyNotCarried(head: OpusHead): string | undefined {
  if (head.mappingFamily === 0) return undefined; // parseOpusHead allows it 1 or 2 channels only
  if (head.singleStream) return undefined; // ffmpeg -mapping_family 1 of a mono or stereo source
  return `OpusHead channel mapping family ${head.mappingFamily} with ${head.channels} channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0)`;
}

/** Builds an OpusHead, version 1, mapping family 0 (mono or stereo). */
export function buildOpusHead(head: {
  channels: number;
  preSkip: number;
  inputSampleRate: number;
  outputGain?: number;
}): Uint8Array {
  if (head.channels !== 1 && head.channels !== 2) {
    throw new Error(`mapping family 0 allows 1 or 2 channels, got ${head.channels}`);
  }
  const packet = new Uint8Array(FAMILY0_SIZE);
  const view = new DataView(packet.buffer);
  packet.set(MAGIC, 0);
  view.setUint8(8, 1);
  view.setUint8(9, head.channels);
  view.setUint16(10, head.preSkip, true);
  view.setUint32(12, head.inputSampleRate, true);
  view.setInt16(16, head.outputGain ?? 0, true);
  view.setUint8(18, 0);
  return packet;
}
