/**
 * Header timestamps: the hot path writes float milliseconds as two u32
 * halves; the bytes must be exactly the little-endian i64 of the rounded
 * nanoseconds, and reading them back must give the same milliseconds.
 */
import { describe, expect, test } from "bun:test";
import { readTimestampMs, readTimestampNs, writeTimestampMs, writeTimestampNs } from "../../src/protocol/index.ts";

/** Milliseconds covering both halves, a low half with its top bit set, negative times and the far future. */
const MILLISECONDS = [
  0,
  1e-6, // 1 ns
  -1e-6, // -1 ns: every byte 0xff
  4294.967295, // 2^32 - 1 ns: low half all ones, high half 0
  4294.967296, // 2^32 ns: low half 0, high half 1
  2147.483648, // 2^31 ns: top bit of the low half
  1_700_000_000_123.456, // a current wall clock
  -86_400_000.5, // a day before 1970
  2 ** 62 / 1e6,
];

/** The exact i64 the hot path must write for `ms`: its nanoseconds rounded, as a bigint. */
const exactNs = (ms: number) => BigInt(Math.round(ms * 1e6));

function written(write: (bytes: Uint8Array) => void): number[] {
  // Surrounded by marker bytes: nothing outside the 8 bytes at offset 3 may change.
  const bytes = new Uint8Array(14).fill(0xa5);
  write(bytes);
  return [...bytes];
}

describe("timestamps", () => {
  test("writeTimestampMs writes the same 8 bytes as writeTimestampNs of the rounded nanoseconds", () => {
    for (const ms of MILLISECONDS) {
      const viaMs = written((bytes) => writeTimestampMs(bytes, 3, ms));
      const viaNs = written((bytes) => writeTimestampNs(bytes, 3, exactNs(ms)));
      const viaDataView = written((bytes) => new DataView(bytes.buffer).setBigInt64(3, exactNs(ms), true));
      expect({ ms, bytes: viaMs }).toEqual({ ms, bytes: viaDataView });
      expect({ ms, bytes: viaNs }).toEqual({ ms, bytes: viaDataView });
    }
  });

  test("the i64 is little-endian, low half first", () => {
    const bytes = written((bytes) => writeTimestampMs(bytes, 3, (2 ** 32 + 2) / 1e6));
    expect(bytes.slice(3, 11)).toEqual([2, 0, 0, 0, 1, 0, 0, 0]);
    expect(bytes.slice(0, 3)).toEqual([0xa5, 0xa5, 0xa5]);
    expect(bytes.slice(11)).toEqual([0xa5, 0xa5, 0xa5]);
    const minusOne = written((bytes) => writeTimestampMs(bytes, 3, -1e-6));
    expect(minusOne.slice(3, 11)).toEqual(Array(8).fill(0xff));
  });

  test("readTimestampMs reads back exactly the nanoseconds, in milliseconds", () => {
    for (const ms of MILLISECONDS) {
      const bytes = new Uint8Array(16);
      new DataView(bytes.buffer).setBigInt64(5, exactNs(ms), true); // written by the platform, not by us
      expect({ ms, read: readTimestampMs(bytes, 5) }).toEqual({ ms, read: Number(exactNs(ms)) / 1e6 });
      expect(readTimestampNs(bytes, 5)).toBe(exactNs(ms));
    }
    // A stamp from another sender, to the nanosecond (the wire contract's first test vector).
    const bytes = Uint8Array.of(0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c, 0x97, 0x17);
    expect(readTimestampMs(bytes, 0)).toBe(Number(1700000000123456789n) / 1e6);
  });
});
