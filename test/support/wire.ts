/** Builders and readers of wire captures (PROTOCOL.md "wire" format) for tests. */
import { encodeMessage, FrameParser, MessageType, OUTPUT_MAGIC, ProtocolError } from "../../src/protocol/index.ts";
import { testPayload } from "./temp.ts";

/** Header timestamp of frame i in generated captures: a fixed epoch, 20 ms apart. */
export function frameTimestampNs(i: number): bigint {
  return 1_700_000_000_000_000_000n + BigInt(i) * 20_000_000n;
}

/** The OpusFrame messages of frames `from` .. `to - 1`, back to back. */
export function wireBytes(from: number, to: number, payloadOf: (i: number) => Uint8Array = testPayload, magic = OUTPUT_MAGIC): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let i = from; i < to; i++) {
    const m = encodeMessage(magic, MessageType.OpusFrame, payloadOf(i), frameTimestampNs(i));
    parts.push(m);
    total += m.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Writes a capture of frames 0 .. count-1 to `path`; resolves with its size in bytes. */
export async function writeWireFile(path: string, count: number, payloadOf: (i: number) => Uint8Array = testPayload): Promise<number> {
  const writer = Bun.file(path).writer({ highWaterMark: 1 << 20 });
  let bytes = 0;
  const BATCH = 1000;
  for (let from = 0; from < count; from += BATCH) {
    const chunk = wireBytes(from, Math.min(count, from + BATCH), payloadOf);
    writer.write(chunk);
    bytes += chunk.length;
    await writer.flush();
  }
  await writer.end();
  return bytes;
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
