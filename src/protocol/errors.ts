import { MAX_PAYLOAD } from "./limits.ts";
import { describeMagic } from "./message-type.ts";

export type ProtocolErrorKind =
  | "BadMagic"
  | "UnknownType"
  | "FrameTooLarge"
  | "Truncated"
  | "BadConfig";

/**
 * A framing violation by a peer or a source file. Carries the kind and the
 * offending value so that logs and metrics can name it; never recoverable
 * inside the same stream (the wire contract: no resync).
 */
export class ProtocolError extends Error {
  constructor(
    readonly kind: ProtocolErrorKind,
    readonly value: number,
    message: string,
    /** Byte offset in the stream where the offending message starts, when known. */
    readonly offset?: number,
  ) {
    super(offset === undefined ? message : `${message} at byte ${offset}`);
    this.name = "ProtocolError";
  }

  static badMagic(found: number, expected: number, offset?: number): ProtocolError {
    return new ProtocolError(
      "BadMagic",
      found >>> 0,
      `BadMagic: ${describeMagic(found)}, expected ${describeMagic(expected)}`,
      offset,
    );
  }

  static unknownType(type: number, offset?: number): ProtocolError {
    return new ProtocolError("UnknownType", type, `UnknownType: ${type}, allowed 0..4`, offset);
  }

  static frameTooLarge(length: number, offset?: number): ProtocolError {
    return new ProtocolError(
      "FrameTooLarge",
      length,
      `FrameTooLarge: ${length} > ${MAX_PAYLOAD}`,
      offset,
    );
  }

  static truncated(missing: number, offset?: number): ProtocolError {
    return new ProtocolError(
      "Truncated",
      missing,
      `Truncated: stream ended ${missing} byte(s) short of a whole message`,
      offset,
    );
  }
}
