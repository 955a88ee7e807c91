/**
 * The OpusTags comment header, second packet of an Ogg Opus stream
 * (RFC 7845 section 5.2), little-endian:
 *   "OpusTags" | vendor length u32 | vendor UTF-8 | comment count u32 |
 *   per comment: length u32 | "KEY=value" UTF-8
 * A reader needs nothing from it, so it is only recognised and skipped.
 */

const MAGIC = [0x4f, 0x70, 0x75, 0x73, 0x54, 0x61, 0x67, 0x73]; // "OpusTags"

const VENDOR = "audio-agent";

export function isOpusTags(packet: Uint8Array): boolean {
  return packet.length >= 8 && MAGIC.every((b, i) => packet[i] === b);
}

export function buildOpusTags(vendor = VENDOR, comments: string[] = []): Uint8Array {
  const encoder = new TextEncoder();
  const strings = [vendor, ...comments].map((s) => encoder.encode(s));
  // magic, comment count, and each string with its u32 length
  const size = 8 + 4 + strings.reduce((n, s) => n + 4 + s.length, 0);
  const packet = new Uint8Array(size);
  const view = new DataView(packet.buffer);
  packet.set(MAGIC, 0);
  let at = 8;
  strings.forEach((s, i) => {
    view.setUint32(at, s.length, true);
    packet.set(s, at + 4);
    at += 4 + s.length;
    if (i === 0) {
      view.setUint32(at, comments.length, true);
      at += 4;
    }
  });
  return packet;
}
