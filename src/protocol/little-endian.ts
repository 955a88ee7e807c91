/**
 * Little-endian integers read straight from a Uint8Array. A chunk fresh from a
 * socket read has no ArrayBuffer object until `.buffer` is asked for, and
 * making one (for a DataView) cost more than parsing the frames in it; reads
 * through the bytes allocate nothing. Writes go through a DataView made once
 * over a buffer that lives long (the send queue's ring).
 */

export function readUint32LE(bytes: Uint8Array, at: number): number {
  return readInt32LE(bytes, at) >>> 0;
}

export function readInt32LE(bytes: Uint8Array, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24);
}
