/**
 * Header timestamps: i64 Unix nanoseconds, little-endian.
 *
 * The hot path works in float milliseconds (microsecond resolution) and
 * splits them into two u32 halves, so stamping a frame allocates nothing;
 * exact i64 values go through bigint.
 */

const TWO_32 = 4294967296;

/** Wall-clock Unix time in ms with microsecond resolution (Date.now() has only ms). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Writes `ms` (Unix milliseconds, fractional) as i64 nanoseconds at `offset`. */
export function writeTimestampMs(view: DataView, offset: number, ms: number): void {
  const ns = Math.round(ms * 1e6);
  const hi = Math.floor(ns / TWO_32);
  view.setUint32(offset, ns - hi * TWO_32, true);
  view.setInt32(offset + 4, hi, true);
}

/** Reads the i64 nanosecond timestamp at `offset` as Unix milliseconds (float). */
export function readTimestampMs(view: DataView, offset: number): number {
  const lo = view.getUint32(offset, true);
  const hi = view.getInt32(offset + 4, true);
  return (hi * TWO_32 + lo) / 1e6;
}

export function writeTimestampNs(view: DataView, offset: number, ns: bigint): void {
  view.setBigInt64(offset, BigInt.asIntN(64, ns), true);
}

export function readTimestampNs(view: DataView, offset: number): bigint {
  return view.getBigInt64(offset, true);
}
