/** Builders and readers of wire captures (README, Formats: "wire") for tests. */
import { expect } from "bun:test";
import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import {
  encodeMessage,
  FrameParser,
  HEADER_SIZE,
  MAX_MESSAGE,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
  writeTimestampNs,
  type ParsedMessage,
} from "../../src/protocol/index.ts";
import { concatBytes } from "./bytes.ts";
import { FEED_MAX_SIZE, indexedPayload, testPayload } from "./payloads.ts";

/** Header timestamp of frame i in generated captures: a fixed epoch, `frameMs` apart. */
export function frameTimestampNs(i: number, frameMs = 20): bigint {
  return 1_700_000_000_000_000_000n + BigInt(i * frameMs) * 1_000_000n;
}

/** The OpusFrame messages of frames `from` .. `to - 1`, back to back, `frameMs` apart. */
export function wireBytes(
  from: number,
  to: number,
  payloadOf: (i: number) => Uint8Array = testPayload,
  magic = OUTPUT_MAGIC,
  frameMs = 20,
): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  for (let i = from; i < to; i++) parts.push(encodeMessage(magic, MessageType.OpusFrame, payloadOf(i), frameTimestampNs(i, frameMs)));
  return concatBytes(parts);
}

/** Wire messages of indexed frames `from` .. `to - 1` (what a capture of them holds). */
export function indexedWire(from: number, to: number, maxSize = FEED_MAX_SIZE, magic = OUTPUT_MAGIC): Uint8Array<ArrayBuffer> {
  return wireBytes(from, to, (i) => indexedPayload(i, maxSize), magic);
}

/**
 * A bare message header, written field by field rather than by the code
 * under test: what a peer that breaks the framing (a wrong magic, an unknown
 * type, a length over the limit) sends.
 */
export function wireHeader(magic: number, type: number, length: number, timestampNs = 0n): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, magic >>> 0, true);
  view.setUint8(4, type);
  view.setUint32(5, length >>> 0, true);
  view.setBigUint64(9, BigInt.asUintN(64, timestampNs), true);
  return bytes;
}

/**
 * Writes a capture of frames 0 .. count-1 to `path` through one reused
 * buffer (fresh large allocations are slow on some machines); resolves with
 * its size in bytes.
 */
export async function writeWireFile(path: string, count: number, payloadOf: (i: number) => Uint8Array = testPayload): Promise<number> {
  const buffer = new Uint8Array(1 << 20);
  const view = new DataView(buffer.buffer);
  const fd = openSync(path, "w");
  let used = 0;
  let bytes = 0;
  try {
    for (let i = 0; i < count; i++) {
      const payload = payloadOf(i);
      if (used + HEADER_SIZE + payload.length > buffer.length) {
        writeSync(fd, buffer, 0, used);
        used = 0;
      }
      view.setUint32(used, OUTPUT_MAGIC, true);
      view.setUint8(used + 4, MessageType.OpusFrame);
      view.setUint32(used + 5, payload.length, true);
      writeTimestampNs(buffer, used + 9, frameTimestampNs(i));
      buffer.set(payload, used + HEADER_SIZE);
      used += HEADER_SIZE + payload.length;
      bytes += HEADER_SIZE + payload.length;
    }
    if (used > 0) writeSync(fd, buffer, 0, used);
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/** The ProtocolError `parse` throws (e.g. () => parser.next()); fails the test when it throws nothing or something else. */
export function protocolErrorOf(parse: () => unknown): ProtocolError {
  let error: unknown;
  try {
    parse();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ProtocolError);
  return error as ProtocolError;
}

export interface WireScan {
  /** Whole messages seen. */
  messages: number;
  /** Bytes at the end that do not make a whole message. */
  trailing: number;
  /** A framing violation, if the file has one (messages before it were visited). */
  error?: ProtocolError;
}

/**
 * Streams through a capture file in small chunks, calling `visit` with each
 * whole message (valid only during the call) and its position. For captures
 * too large to hold comfortably in memory.
 */
export function scanWireFile(path: string, visit: (message: ParsedMessage, k: number) => void, magic = OUTPUT_MAGIC): WireScan {
  const parser = new FrameParser(magic);
  const chunk = new Uint8Array(Math.max(1 << 20, MAX_MESSAGE));
  const fd = openSync(path, "r");
  let messages = 0;
  try {
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      parser.push(chunk.subarray(0, n));
      for (let m = parser.next(); m; m = parser.next()) visit(m, messages++);
    }
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return { messages, trailing: parser.pending, error: e };
  } finally {
    closeSync(fd);
  }
  return { messages, trailing: parser.pending };
}

export interface WireMessage {
  type: number;
  /** A view into the parsed bytes. */
  payload: Uint8Array;
  timestampNs: bigint;
}

export interface ParsedWire {
  messages: WireMessage[];
  /** Bytes at the end that do not make a whole message. */
  trailing: number;
  /** A framing violation, if the bytes have one (messages before it are kept). */
  error?: ProtocolError;
}

/** Splits a whole capture into its messages without copying payloads. */
export function parseWire(bytes: Uint8Array, magic = OUTPUT_MAGIC): ParsedWire {
  const parser = new FrameParser(magic);
  const messages: WireMessage[] = [];
  try {
    parser.push(bytes);
    for (let m = parser.next(); m; m = parser.next()) {
      // One chunk: every whole message is a view into `bytes`, so the views stay valid.
      messages.push({ type: m.type, payload: m.payload, timestampNs: m.timestampNs });
    }
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return { messages, trailing: parser.pending, error: e };
  }
  return { messages, trailing: parser.pending };
}

/** The messages of a capture file that must hold whole messages only: a framing error or a torn tail fails the test. */
export function wholeWireMessages(path: string, magic = OUTPUT_MAGIC): WireMessage[] {
  const wire = parseWire(new Uint8Array(readFileSync(path)), magic);
  expect(wire.error).toBeUndefined();
  expect(wire.trailing).toBe(0);
  return wire.messages;
}

/** The payloads of a capture file that must hold whole OpusFrames only (anything else fails the test). */
export function wholeWireFrames(path: string): Uint8Array[] {
  const messages = wholeWireMessages(path);
  expect(messages.filter((m) => m.type !== MessageType.OpusFrame).length).toBe(0);
  return messages.map((m) => m.payload);
}

/** The OpusFrame payloads of a capture file, and how it ends (a torn tail or a framing error is returned, not failed). */
export function wireFileFrames(path: string): { frames: Uint8Array[]; trailing: number; error?: Error } {
  const parsed = parseWire(new Uint8Array(readFileSync(path)));
  return {
    frames: parsed.messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload),
    trailing: parsed.trailing,
    error: parsed.error,
  };
}
