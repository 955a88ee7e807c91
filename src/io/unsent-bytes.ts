import type { Library } from "bun:ffi";
import { LIBC_CANDIDATES, openLibc } from "./libc.ts";

/**
 * ioctl: bytes in a socket's send queue that its peer has not taken
 * (SIOCOUTQ, which is TIOCOUTQ's value): on TCP those not yet acknowledged;
 * on a Unix socket the buffer memory its unread bytes hold, never less.
 */
export const SIOCOUTQ = 0x5411;

const SYMBOLS = {
  // int ioctl(int fd, unsigned long req, ...): variadic, but on the x86_64 and aarch64 Linux
  // ABIs a pointer in the variadic slot is passed exactly like a fixed argument.
  ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
} as const;

let ioctlCall: Library<typeof SYMBOLS> | null | undefined;
// Reused by every call: JS calls into libc synchronously on one thread.
const count = new Int32Array(1);

/**
 * The bytes written on socket `fd` that its peer has not taken yet
 * (SIOCOUTQ), or -1 when they cannot be had (no libc, not a socket, a
 * closed descriptor). One ioctl and no allocation: cheap enough for a hot path.
 */
export function unsentBytes(fd: number): number {
  if (!Number.isInteger(fd) || fd < 0) return -1;
  // null: tried, and no libc opened.
  if (ioctlCall === undefined) ioctlCall = openLibc(SYMBOLS).library;
  if (!ioctlCall) return -1;
  count[0] = 0;
  return ioctlCall.symbols.ioctl(fd, SIOCOUTQ, count) === 0 ? count[0]! : -1;
}

/**
 * Loads the ioctl again from the first of `candidates` that opens: with none
 * that does, unsentBytes answers -1, as on a system without a libc to call,
 * so that what its callers do then can be exercised. Whether one opened.
 */
export function loadUnsentBytesFrom(candidates: readonly string[] = LIBC_CANDIDATES): boolean {
  ioctlCall = openLibc(SYMBOLS, candidates).library;
  return ioctlCall !== null;
}
