/** Message types (header byte 4) and the two channels' magic numbers. */

export const MessageType = {
  OpusFrame: 0,
  Config: 1,
  Stop: 2,
  Heartbeat: 3,
  Ack: 4,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export function isMessageType(value: number): value is MessageType {
  return value >= MessageType.OpusFrame && value <= MessageType.Ack;
}

export type Channel = "output" | "input";

/** "JKOU": capture process -> main app. */
export const OUTPUT_MAGIC = 0x4a4b4f55;
/** "JKMI": main app -> playback process. */
export const INPUT_MAGIC = 0x4a4b4d49;

/** Magic as printable text for error messages, e.g. 0x4a4b4f55 ("JKOU"). */
export function describeMagic(magic: number): string {
  const chars = [24, 16, 8, 0].map((shift) => (magic >>> shift) & 0xff);
  const printable = chars.every((c) => c >= 0x20 && c < 0x7f);
  const hex = `0x${(magic >>> 0).toString(16).padStart(8, "0")}`;
  return printable ? `${hex} ("${String.fromCharCode(...chars)}")` : hex;
}
