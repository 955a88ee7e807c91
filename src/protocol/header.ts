import { ProtocolError } from "./errors.ts";
import { HEADER_SIZE, MAX_PAYLOAD } from "./limits.ts";
import { readUint32LE, write32LE } from "./little-endian.ts";
import { isMessageType, type MessageType } from "./message-type.ts";
import { readTimestampNs, writeTimestampMs, writeTimestampNs } from "./timestamp.ts";

/**
 * The 17-byte header, little-endian:
 *   0 magic u32 | 4 type u8 | 5 length u32 | 9 timestamp i64 (Unix ns)
 */
export interface Header {
  magic: number;
  type: MessageType;
  length: number;
  timestampNs: bigint;
}

/** Hot-path header write: timestamp given as Unix ms (float), no allocation. */
export function writeHeader(
  bytes: Uint8Array,
  offset: number,
  magic: number,
  type: MessageType,
  length: number,
  timestampMs: number,
): void {
  write32LE(bytes, offset, magic);
  bytes[offset + 4] = type;
  write32LE(bytes, offset + 5, length);
  writeTimestampMs(bytes, offset + 9, timestampMs);
}

/**
 * Checks the header at `offset` against the channel's magic and the limits.
 * Returns the error instead of throwing so callers on the hot path decide.
 */
export function validateHeader(
  bytes: Uint8Array,
  offset: number,
  expectedMagic: number,
  streamOffset?: number,
): ProtocolError | undefined {
  const magic = readUint32LE(bytes, offset);
  if (magic !== expectedMagic) return ProtocolError.badMagic(magic, expectedMagic, streamOffset);
  const type = bytes[offset + 4]!;
  if (!isMessageType(type)) return ProtocolError.unknownType(type, streamOffset);
  const length = readUint32LE(bytes, offset + 5);
  if (length > MAX_PAYLOAD) return ProtocolError.frameTooLarge(length, streamOffset);
  return undefined;
}

export function readHeader(bytes: Uint8Array, offset = 0): Header {
  return {
    magic: readUint32LE(bytes, offset),
    type: bytes[offset + 4]! as MessageType,
    length: readUint32LE(bytes, offset + 5),
    timestampNs: readTimestampNs(bytes, offset + 9),
  };
}

/** Builds one whole message (header + payload); for tests and rare messages, not the hot path. */
export function encodeMessage(
  magic: number,
  type: MessageType,
  payload: Uint8Array = new Uint8Array(0),
  timestampNs: bigint = 0n,
): Uint8Array<ArrayBuffer> {
  if (payload.length > MAX_PAYLOAD) throw ProtocolError.frameTooLarge(payload.length);
  const bytes = new Uint8Array(HEADER_SIZE + payload.length);
  write32LE(bytes, 0, magic);
  bytes[4] = type;
  write32LE(bytes, 5, payload.length);
  writeTimestampNs(bytes, 9, timestampNs);
  bytes.set(payload, HEADER_SIZE);
  return bytes;
}
