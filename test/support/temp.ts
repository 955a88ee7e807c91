import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A fresh short temp dir (sun_path is 108 bytes) removed by the returned cleanup. */
export function tempDir(prefix = "aa-"): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

const POOL = (() => {
  const pool = new Uint8Array(1 << 16);
  let x = 0x9e3779b9;
  for (let j = 0; j < pool.length; j++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    pool[j] = x >>> 24;
  }
  return pool;
})();

/** Deterministic payloads: frame i has a size in 1..maxSize, content derived from i (index in its first bytes). */
export function testPayload(i: number, maxSize = 4096): Uint8Array {
  const x = Math.imul(i + 1, 2654435761) >>> 0;
  const size = 1 + (x % maxSize);
  const start = (x >>> 7) % (POOL.length - size);
  const out = POOL.slice(start, start + size);
  for (let j = 0; j < 4 && j < size; j++) out[j] = (i >>> (8 * j)) & 0xff;
  return out;
}

/** True when `bytes` equals testPayload(i, maxSize), without building it (for long streams). */
export function isTestPayload(i: number, bytes: Uint8Array, maxSize = 4096): boolean {
  const x = Math.imul(i + 1, 2654435761) >>> 0;
  const size = 1 + (x % maxSize);
  if (bytes.length !== size) return false;
  const start = (x >>> 7) % (POOL.length - size);
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
  const x = Math.imul(i + 1, 2654435761) >>> 0;
  const size = 4 + (x % (maxSize - 3));
  const start = (x >>> 7) % (POOL.length - size);
  const out = POOL.slice(start, start + size);
  new DataView(out.buffer).setUint32(0, i >>> 0, true);
  return out;
}

/** The index an indexedPayload carries. */
export function payloadIndex(payload: Uint8Array): number {
  if (payload.length < 4) return -1;
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
}

/** True when `payload` is exactly indexedPayload(its index): whole and uncorrupted. */
export function isIntactIndexedPayload(payload: Uint8Array, maxSize = 4096): boolean {
  const i = payloadIndex(payload);
  return i >= 0 && sameBytes(payload, indexedPayload(i, maxSize));
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return false;
  return true;
}

export async function until(check: () => boolean, what: string, timeoutMs = 20000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}
