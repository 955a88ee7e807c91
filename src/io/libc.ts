import { dlopen, read, type Library, type Pointer, type Symbols } from "bun:ffi";

// libc through bun:ffi, for every layer that calls it: transport (socket tuning, the notify
// socket), observe (who owns a monitor peer's socket), which may not import transport, and the benchmark.

/** Linux's values (the same on x86-64 and aarch64), for the sockets the callers open through libc. */
export const AF_UNIX = 1;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;

/**
 * A struct sockaddr_un naming `name`, a path or an abstract name ("@name"),
 * as long as the address it holds (the socklen_t to pass): sa_family_t, then
 * the path and its NUL, or a NUL and the abstract name with none after.
 */
export function unixAddress(name: string): Uint8Array {
  const abstract = name.startsWith("@");
  const bytes = Buffer.from(abstract ? name.slice(1) : name);
  const address = new Uint8Array(2 + bytes.length + 1);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(bytes, abstract ? 3 : 2);
  return address;
}

/**
 * Tried in order: glibc, musl by soname (Alpine), musl by loader path, then a generic name.
 * Under musl the first already succeeds: its loader maps any "libc.*" name to itself.
 */
export const LIBC_CANDIDATES: readonly string[] = [
  "libc.so.6",
  "libc.musl-aarch64.so.1",
  "libc.musl-x86_64.so.1",
  "/lib/ld-musl-aarch64.so.1",
  "/lib/ld-musl-x86_64.so.1",
  "libc.so",
];

/**
 * The first of `candidates` that opens with `symbols` (and the candidate's
 * name as `detail`), or a null library and why none did: for any libc call
 * made through bun:ffi.
 */
export function openLibc<S extends Symbols>(
  symbols: S,
  candidates: readonly string[] = LIBC_CANDIDATES,
): { library: Library<S>; detail: string } | { library: null; detail: string } {
  const errors: string[] = [];
  for (const name of candidates) {
    try {
      return { library: dlopen(name, symbols), detail: name };
    } catch (err) {
      errors.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return { library: null, detail: `no libc could be loaded (${errors.join("; ")})` };
}

/** `int *__errno_location(void)`, exported by glibc and musl alike: among a caller's symbols, for lastErrno. */
export const ERRNO_LOCATION = { args: [], returns: "ptr" } as const;

/** errno as the last failed call left it: read straight after that call, before anything else can overwrite it. */
export function lastErrno(symbols: { __errno_location: () => unknown }): number {
  // Never null: errno's address in this thread.
  return read.i32(symbols.__errno_location() as Pointer, 0);
}

/** The name of errno as the last failed call left it (see lastErrno and errnoName). */
export function lastErrnoName(symbols: { __errno_location: () => unknown }): string {
  return errnoName(lastErrno(symbols));
}

let errnoNames: Map<number, string> | undefined;

/** An errno's name ("EAGAIN"), or "errno N" for one this platform's table lacks. */
export function errnoName(errno: number): string {
  // Node's errno table carries this platform's numbers, so no hand-written Linux table.
  // Loaded on the first failure only: node:os costs every process memory.
  const { constants } = require("node:os") as typeof import("node:os");
  errnoNames ??= new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
  return errnoNames.get(errno) ?? `errno ${errno}`;
}
