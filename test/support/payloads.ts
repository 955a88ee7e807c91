/**
 * Deterministic frame payloads: payload i is cut from one fixed pseudo-random
 * pool at an offset derived from i, with i itself (little-endian) in its
 * first 4 bytes, so that a received payload tells which frame it is. And the
 * checks on what arrived.
 */
import { expect } from "bun:test";
import { sameBytes } from "./bytes.ts";

const POOL = (() => {
  const pool = new Uint8Array(1 << 16);
  let x = 0x9e3779b9;
  for (let j = 0; j < pool.length; j++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    pool[j] = x >>> 24;
  }
  return pool;
})();

/** The hash of index i that its payload's size and pool offset derive from. */
function mix(i: number): number {
  return Math.imul(i + 1, 2654435761) >>> 0;
}

/** Payload i at exactly `size` bytes: its index in the first 4 bytes (as many as fit), pool bytes after. */
export function payloadOfSize(i: number, size: number): Uint8Array {
  const start = (mix(i) >>> 7) % (POOL.length - size);
  const out = POOL.slice(start, start + size);
  for (let j = 0; j < 4 && j < size; j++) out[j] = (i >>> (8 * j)) & 0xff;
  return out;
}

/** Payload i with a size in 1..maxSize derived from i (a short one carries only part of its index). */
export function testPayload(i: number, maxSize = 4096): Uint8Array {
  return payloadOfSize(i, 1 + (mix(i) % maxSize));
}

/** True when `bytes` equals testPayload(i, maxSize), without building it (for long streams). */
export function isTestPayload(i: number, bytes: Uint8Array, maxSize = 4096): boolean {
  const size = 1 + (mix(i) % maxSize);
  if (bytes.length !== size) return false;
  const start = (mix(i) >>> 7) % (POOL.length - size);
  for (let j = 0; j < size; j++) {
    const want = j < 4 ? (i >>> (8 * j)) & 0xff : POOL[start + j];
    if (bytes[j] !== want) return false;
  }
  return true;
}

/**
 * Like testPayload, but always at least 4 bytes, so that the frame's index can
 * be read back from any received payload (payloadIndex) even when frames were
 * dropped in between. Sizes 4..maxSize.
 */
export function indexedPayload(i: number, maxSize = 4096): Uint8Array {
  return payloadOfSize(i, 4 + (mix(i) % (maxSize - 3)));
}

/** The index an indexedPayload (or a payloadOfSize of 4 bytes or more) carries. */
export function payloadIndex(payload: Uint8Array): number {
  if (payload.length < 4) return -1;
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
}

/** True when `payload` is exactly indexedPayload(its index): whole and uncorrupted. */
export function isIntactIndexedPayload(payload: Uint8Array, maxSize = 4096): boolean {
  const i = payloadIndex(payload);
  return i >= 0 && sameBytes(payload, indexedPayload(i, maxSize));
}

/** Frames fed to spawned servers stay small so that a flood is many frames, not many bytes. */
export const FEED_MAX_SIZE = 600;

/**
 * Received payloads must be whole indexed payloads, none corrupt, none
 * duplicated, none out of order (strictly increasing indices). Returns the indices.
 */
export function expectIntactInOrder(payloads: Uint8Array[], maxSize = FEED_MAX_SIZE): number[] {
  const corrupt = payloads.filter((p) => !isIntactIndexedPayload(p, maxSize)).length;
  expect(corrupt).toBe(0);
  const indices = payloads.map(payloadIndex);
  const notIncreasing = indices.filter((i, k) => k > 0 && i <= indices[k - 1]!).length;
  expect(notIncreasing).toBe(0);
  return indices;
}

/** Index (first + k) of the first payload that is not testPayload(first + k), or -1 when every one is. */
export function firstMismatch(payloads: Uint8Array[], first = 0): number {
  const k = payloads.findIndex((p, k) => !isTestPayload(first + k, p));
  return k < 0 ? -1 : first + k;
}
