/**
 * The Ogg page checksum (RFC 3533 section 6): CRC-32 with polynomial
 * 0x04c11db7, initial value 0, no bit reflection and no final xor. It is not
 * the zlib CRC-32 (that one is reflected), hence this table.
 */

const TABLE = buildTable();

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
}

/**
 * Continues `crc` over `bytes[start, end)`. Incremental so a page can be
 * checked in pieces (its CRC field taken as zero) without copying it.
 */
export function oggCrc(bytes: Uint8Array, crc = 0, start = 0, end = bytes.length): number {
  let c = crc;
  for (let i = start; i < end; i++) c = (c << 8) ^ TABLE[((c >>> 24) ^ bytes[i]!) & 0xff]!;
  return c >>> 0;
}
