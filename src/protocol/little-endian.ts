/**
 * Little-endian integers read and written straight in a Uint8Array. A chunk
 * fresh from a socket read has no ArrayBuffer object until `.buffer` is asked
 * for, and making one (for a DataView) cost more than parsing the frames in
 * it. And each DataView call is a call into the runtime: a live process runs
 * its per-frame code cold, once every 20 ms, in the interpreter, where such a
 * call cost about 1 us against about 0.1 us for a byte stored (bench/FINDINGS.md).
 */

export function readUint32LE(bytes: Uint8Array, at: number): number {
  return readInt32LE(bytes, at) >>> 0;
}

export function readInt32LE(bytes: Uint8Array, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24);
}

/** Writes the low 32 bits of `value` (signed or unsigned alike). */
export function write32LE(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value;
  bytes[at + 1] = value >>> 8;
  bytes[at + 2] = value >>> 16;
  bytes[at + 3] = value >>> 24;
}
