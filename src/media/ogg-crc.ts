/**
 * The Ogg page checksum (RFC 3533 section 6): CRC-32 with polynomial
 * 0x04c11db7, initial value 0, no bit reflection and no final xor. It is not
 * the zlib CRC-32 (that one is reflected), so Bun's native crc32 cannot do it.
 *
 * Every page a source reads and a sink writes passes through here, and a live
 * process runs it in JavaScriptCore's interpreter (src/roles/jit-policy.ts),
 * where each typed-array access and each operation costs a few nanoseconds.
 * So the bulk of a page goes eight bytes a step ("slicing-by-8"): two 32-bit
 * loads and eight table lookups instead of eight byte loads and eight
 * lookups, about 4x faster there than a byte a step (bench/FINDINGS.md).
 */

const POLYNOMIAL = 0x04c11db7;

/**
 * TABLES[k][b]: the CRC of byte b followed by k zero bytes. Plain arrays of
 * int32, not Uint32Arrays: the interpreter reads those on its fast path.
 */
const TABLES = buildTables();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [number[], number[], number[], number[], number[], number[], number[], number[]];

/** The word loads read bytes in memory order as the low byte first: true on x64 and arm64. */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

function buildTables(): number[][] {
  const first: number[] = [];
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) r = r & 0x80000000 ? (r << 1) ^ POLYNOMIAL : r << 1;
    first.push(r | 0);
  }
  const tables = [first];
  for (let k = 1; k < 8; k++) {
    const previous = tables[k - 1]!;
    tables.push(previous.map((r) => (r << 8) ^ first[r >>> 24]!));
  }
  return tables;
}

/**
 * Continues `crc` over `bytes[start, end)`. Incremental so a page can be
 * checked in pieces (its CRC field taken as zero) without copying it.
 */
export function oggCrc(bytes: Uint8Array, crc = 0, start = 0, end = bytes.length): number {
  // Below 0 the aligned words would be read from before the view, in its buffer; between bytes they would be misread.
  if (!(Number.isInteger(start) && start >= 0)) throw new RangeError(`oggCrc: start must be an integer >= 0, got ${start}`);
  // A page whose header claims more bytes than there are: the CRC of what is there.
  if (end > bytes.length) end = bytes.length;
  let c = crc | 0;
  let i = start;
  // A byte at a time up to a 4-byte boundary, so the words below are aligned.
  while (i < end && ((bytes.byteOffset + i) & 3) !== 0) c = (c << 8) ^ T0[((c >>> 24) ^ bytes[i++]!) & 0xff]!;
  const steps = LITTLE_ENDIAN ? (end - i) >> 3 : 0;
  if (steps > 0) {
    const words = new Int32Array(bytes.buffer, bytes.byteOffset + i, steps * 2);
    for (let k = 0; k < words.length; k += 2) {
      // w holds the next four bytes low byte first; the first of them meets the CRC's top byte.
      const w = words[k]!;
      const v = words[k + 1]!;
      c =
        T7[((c >>> 24) ^ w) & 0xff]! ^
        T6[((c >>> 16) ^ (w >>> 8)) & 0xff]! ^
        T5[((c >>> 8) ^ (w >>> 16)) & 0xff]! ^
        T4[(c ^ (w >>> 24)) & 0xff]! ^
        T3[v & 0xff]! ^
        T2[(v >>> 8) & 0xff]! ^
        T1[(v >>> 16) & 0xff]! ^
        T0[v >>> 24]!;
    }
    i += steps * 8;
  }
  for (; i < end; i++) c = (c << 8) ^ T0[((c >>> 24) ^ bytes[i]!) & 0xff]!;
  return c >>> 0;
}
