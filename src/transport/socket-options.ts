// Kernel buffer control on a raw fd through libc (bun:ffi): a socket's send and receive buffers,
// and a pipe's capacity.
//
// Bun's sockets expose `socket.fd` but no sockopt API, so we call setsockopt/getsockopt/ioctl
// (and fcntl for a pipe) ourselves. Every function returns a result value and never throws: buffer tuning is an
// optimisation, and a missing libc (or a closed fd) must not take the audio path down.

import type { Library } from "bun:ffi";
import { ERRNO_LOCATION, errnoName, lastErrno, LIBC_CANDIDATES, openLibc, SOCK_STREAM } from "../io/libc.ts";
import { SIOCOUTQ } from "../io/unsent-bytes.ts";

// Linux values, identical on x86_64 and aarch64 (asm-generic); not valid on other kernels.
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
/** A socket's type: SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5). */
export const SO_TYPE = 3;
/** SO_TYPE's values by name, for a message about a socket of another type. */
const SOCKET_TYPE_NAMES: Record<number, string> = { 1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET" };
/** ioctl: bytes in the send queue not yet consumed by the peer (SIOCOUTQ). */
export const TIOCOUTQ = SIOCOUTQ;
/** ioctl: bytes waiting in the receive queue (SIOCINQ). */
export const FIONREAD = 0x541b;
/** fcntl: a descriptor's status flags, and the one that makes its writes return EAGAIN instead of waiting. */
export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_NONBLOCK = 0o4000;
/** fcntl: set and get a pipe's capacity in bytes (Linux 2.6.35+). */
export const F_SETPIPE_SZ = 1031;
export const F_GETPIPE_SZ = 1032;
/** shutdown: the receiving side. */
const SHUT_RD = 0;

export interface SocketBufferSizes {
  sendBytes: number;
  receiveBytes: number;
}

export type SocketOptionCall =
  | "setsockopt(SO_SNDBUF)"
  | "setsockopt(SO_RCVBUF)"
  | "getsockopt(SO_SNDBUF)"
  | "getsockopt(SO_RCVBUF)"
  | "getsockopt(SO_TYPE)"
  | "ioctl(TIOCOUTQ)"
  | "ioctl(FIONREAD)"
  | "fcntl(F_SETFL)"
  | "fcntl(F_SETPIPE_SZ)"
  | "fcntl(F_GETPIPE_SZ)"
  | "shutdown(SHUT_RD)";

/** Why a call did not happen or failed; `code` is the errno name ("EBADF") when there is one. */
export interface SocketOptionFailure {
  ok: false;
  kind: "LibcUnavailable" | "InvalidArgument" | "SyscallFailed";
  call: SocketOptionCall;
  fd: number;
  errno: number;
  code: string;
  message: string;
}

export type SetSocketBuffersResult =
  | { ok: true; fd: number; requested: SocketBufferSizes; applied: SocketBufferSizes }
  | SocketOptionFailure;

export type GetSocketBuffersResult = ({ ok: true; fd: number } & SocketBufferSizes) | SocketOptionFailure;

/** A count of bytes the kernel gave (a queue's, a pipe's or a buffer's size), or why not. */
export type BytesResult = { ok: true; fd: number; bytes: number } | SocketOptionFailure;

const SYMBOLS = {
  // int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  // int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
  getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
  // int ioctl(int fd, unsigned long req, ...): variadic, but on the x86_64 and aarch64 Linux
  // ABIs a pointer in the variadic slot is passed exactly like a fixed argument.
  ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
  // int fcntl(int fd, int cmd, ...): variadic too; an int there is passed like a fixed one.
  fcntl: { args: ["i32", "i32", "i32"], returns: "i32" },
  // int shutdown(int fd, int how)
  shutdown: { args: ["i32", "i32"], returns: "i32" },
  __errno_location: ERRNO_LOCATION,
} as const;

type Libc = Library<typeof SYMBOLS>["symbols"];

interface LibcState {
  libc: Libc | null;
  /** The candidate that loaded, or why none did. */
  detail: string;
}

let state: LibcState | undefined;

function loadLibc(): LibcState {
  return (state ??= openFirst(LIBC_CANDIDATES));
}

function openFirst(candidates: readonly string[]): LibcState {
  const opened = openLibc(SYMBOLS, candidates);
  return { libc: opened.library?.symbols ?? null, detail: opened.detail };
}

/**
 * Replaces the loaded libc with the first of `candidates` that opens (the default list
 * normally loads lazily on first use). Lets tests and diagnostics exercise the "no libc" path.
 */
export function loadLibcFrom(candidates: readonly string[] = LIBC_CANDIDATES): ReturnType<typeof libcInfo> {
  state = openFirst(candidates);
  return libcInfo();
}

/** Which libc was loaded (loading it now if needed), or why none could be. */
export function libcInfo(): { loaded: true; name: string } | { loaded: false; reason: string } {
  const s = loadLibc();
  return s.libc ? { loaded: true, name: s.detail } : { loaded: false, reason: s.detail };
}

// Reused for every call so repeated calls allocate nothing for FFI. Safe because JS calls into
// libc synchronously on one thread (each Worker gets its own module instance).
const intValue = new Int32Array(1);
const intLength = new Uint32Array(1);

function failure(
  kind: SocketOptionFailure["kind"],
  call: SocketOptionCall,
  fd: number,
  errno: number,
  code: string,
  message: string,
): SocketOptionFailure {
  return { ok: false, kind, call, fd, errno, code, message };
}

function unavailable(call: SocketOptionCall, fd: number, reason: string): SocketOptionFailure {
  return failure("LibcUnavailable", call, fd, 0, "", `${call} on fd ${fd}: ${reason}`);
}

function syscallFailed(libc: Libc, call: SocketOptionCall, fd: number): SocketOptionFailure {
  const errno = lastErrno(libc);
  const code = errnoName(errno);
  return failure("SyscallFailed", call, fd, errno, code, `${call} on fd ${fd} failed: ${code}`);
}

function badFd(call: SocketOptionCall, fd: number): SocketOptionFailure | null {
  // Checked here because FFI would silently coerce a non-integer into some other fd.
  if (Number.isInteger(fd)) return null;
  return failure("InvalidArgument", call, fd, 0, "", `${call}: fd must be an integer, got ${fd}`);
}

/** `use` with libc, once `fd` is an integer and libc is loaded; else why not, as a failure of `call`. */
function withLibc<T>(call: SocketOptionCall, fd: number, use: (libc: Libc) => T): T | SocketOptionFailure {
  const bad = badFd(call, fd);
  if (bad) return bad;
  const { libc, detail } = loadLibc();
  return libc ? use(libc) : unavailable(call, fd, detail);
}

function getInt(libc: Libc, fd: number, name: number, call: SocketOptionCall): number | SocketOptionFailure {
  intValue[0] = 0;
  intLength[0] = 4;
  if (libc.getsockopt(fd, SOL_SOCKET, name, intValue, intLength) !== 0) return syscallFailed(libc, call, fd);
  return intValue[0];
}

function setInt(libc: Libc, fd: number, name: number, value: number, call: SocketOptionCall): SocketOptionFailure | null {
  intValue[0] = value;
  if (libc.setsockopt(fd, SOL_SOCKET, name, intValue, 4) !== 0) return syscallFailed(libc, call, fd);
  return null;
}

/**
 * Sets SO_SNDBUF and SO_RCVBUF, then reads both back: `applied` is what the kernel really uses
 * (Linux doubles the request for bookkeeping and clamps it to net.core.wmem_max/rmem_max).
 */
export function setSocketBuffers(fd: number, sizes: SocketBufferSizes): SetSocketBuffersResult {
  const bad = badFd("setsockopt(SO_SNDBUF)", fd);
  if (bad) return bad;
  for (const [call, value] of [
    ["setsockopt(SO_SNDBUF)", sizes.sendBytes],
    ["setsockopt(SO_RCVBUF)", sizes.receiveBytes],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0 || value > 0x7fffffff) {
      return failure("InvalidArgument", call, fd, 0, "", `${call} on fd ${fd}: size must be a positive int, got ${value}`);
    }
  }
  const { libc, detail } = loadLibc();
  if (!libc) return unavailable("setsockopt(SO_SNDBUF)", fd, detail);

  const sendFailed = setInt(libc, fd, SO_SNDBUF, sizes.sendBytes, "setsockopt(SO_SNDBUF)");
  if (sendFailed) return sendFailed;
  const receiveFailed = setInt(libc, fd, SO_RCVBUF, sizes.receiveBytes, "setsockopt(SO_RCVBUF)");
  if (receiveFailed) return receiveFailed;

  const applied = getSocketBuffers(fd);
  if (!applied.ok) return applied;
  return {
    ok: true,
    fd,
    requested: { sendBytes: sizes.sendBytes, receiveBytes: sizes.receiveBytes },
    applied: { sendBytes: applied.sendBytes, receiveBytes: applied.receiveBytes },
  };
}

/** SO_SNDBUF and SO_RCVBUF as the kernel reports them (on Linux, double what was set). */
export function getSocketBuffers(fd: number): GetSocketBuffersResult {
  return withLibc("getsockopt(SO_SNDBUF)", fd, (libc): GetSocketBuffersResult => {
    const sendBytes = getInt(libc, fd, SO_SNDBUF, "getsockopt(SO_SNDBUF)");
    if (typeof sendBytes !== "number") return sendBytes;
    const receiveBytes = getInt(libc, fd, SO_RCVBUF, "getsockopt(SO_RCVBUF)");
    if (typeof receiveBytes !== "number") return receiveBytes;
    return { ok: true, fd, sendBytes, receiveBytes };
  });
}

function queueBytes(fd: number, request: number, call: SocketOptionCall): BytesResult {
  return withLibc(call, fd, (libc): BytesResult => {
    intValue[0] = 0;
    if (libc.ioctl(fd, request, intValue) !== 0) return syscallFailed(libc, call, fd);
    return { ok: true, fd, bytes: intValue[0] };
  });
}

/**
 * Bytes written on this socket that the peer has not read yet (ioctl TIOCOUTQ). For Unix
 * sockets the kernel counts allocated buffer memory, so this includes per-packet overhead.
 */
export function sendQueueBytes(fd: number): BytesResult {
  return queueBytes(fd, TIOCOUTQ, "ioctl(TIOCOUTQ)");
}

/**
 * sendQueueBytes for the writer's hot path: no result object, just the count,
 * or -1 when it cannot be had (no libc, a closed fd).
 */
export { unsentBytes as sendQueueBytesNow } from "../io/unsent-bytes.ts";

/** Bytes waiting to be read on this socket (ioctl FIONREAD). */
export function receiveQueueBytes(fd: number): BytesResult {
  return queueBytes(fd, FIONREAD, "ioctl(FIONREAD)");
}

/**
 * Sets a pipe's capacity (fcntl F_SETPIPE_SZ) and returns what the kernel
 * made of it: rounded up to a power-of-two number of pages, one page at
 * least. Anyone may shrink a pipe; it fails (EBUSY) while the pipe holds
 * more than the new size, and growing it past /proc/sys/fs/pipe-max-size
 * needs privilege (EPERM).
 */
export function setPipeSize(fd: number, bytes: number): BytesResult {
  return pipeSize(fd, F_SETPIPE_SZ, bytes, "fcntl(F_SETPIPE_SZ)");
}

/** A pipe's capacity in bytes (fcntl F_GETPIPE_SZ). */
export function getPipeSize(fd: number): BytesResult {
  return pipeSize(fd, F_GETPIPE_SZ, 0, "fcntl(F_GETPIPE_SZ)");
}

/**
 * Sets a socket's send buffer alone (SO_SNDBUF) and returns what the kernel
 * made of it (double the request, for its bookkeeping). For a Unix stream
 * socket this bounds the bytes written that the peer has not read yet, as a
 * pipe's capacity does, though each write also counts its own overhead.
 */
export function setSendBuffer(fd: number, bytes: number): BytesResult {
  return withLibc("setsockopt(SO_SNDBUF)", fd, (libc) => setInt(libc, fd, SO_SNDBUF, bytes, "setsockopt(SO_SNDBUF)") ?? getSendBuffer(fd));
}

/** A socket's send buffer as the kernel reports it (SO_SNDBUF). */
export function getSendBuffer(fd: number): BytesResult {
  return socketInt(fd, SO_SNDBUF, "getsockopt(SO_SNDBUF)");
}

/** One int socket option of `fd`, in `bytes` (a size, or a type). */
function socketInt(fd: number, name: number, call: SocketOptionCall): BytesResult {
  return withLibc(call, fd, (libc): BytesResult => {
    const value = getInt(libc, fd, name, call);
    return typeof value === "number" ? { ok: true, fd, bytes: value } : value;
  });
}

/** A reader's pipe (or socket) after sizing: its size then, when it could be read, and why it is not the size asked for. */
export interface Sized {
  bytes?: number;
  error?: string;
}

/** setPipeSize as a Sized: after a refusal, the size the pipe kept. */
export function sizedPipe(fd: number, bytes: number): Sized {
  return sized(setPipeSize(fd, bytes), () => getPipeSize(fd));
}

/**
 * setSendBuffer as a Sized: after a refusal, the send buffer the socket kept.
 * A stream socket's only: a packet socket's send buffer bounds its largest
 * message (EMSGSIZE beyond it), not the bytes in flight, so it is left as it is.
 */
export function sizedSendBuffer(fd: number, bytes: number): Sized {
  const type = socketInt(fd, SO_TYPE, "getsockopt(SO_TYPE)");
  if (type.ok && type.bytes !== SOCK_STREAM) {
    const kept = getSendBuffer(fd);
    const name = SOCKET_TYPE_NAMES[type.bytes] ?? `type ${type.bytes}`;
    return { bytes: kept.ok ? kept.bytes : undefined, error: `a packet socket (${name}), whose send buffer bounds each message: left as it is` };
  }
  return sized(setSendBuffer(fd, bytes), () => getSendBuffer(fd));
}

function sized(set: BytesResult, kept: () => BytesResult): Sized {
  if (set.ok) return { bytes: set.bytes };
  const now = kept();
  return { bytes: now.ok ? now.bytes : undefined, error: set.message };
}

/** fcntl(fd, cmd, arg) for a pipe's size: both commands return it. */
function pipeSize(fd: number, cmd: number, arg: number, call: SocketOptionCall): BytesResult {
  return withLibc(call, fd, (libc): BytesResult => {
    const bytes = libc.fcntl(fd, cmd, arg);
    return bytes < 0 ? syscallFailed(libc, call, fd) : { ok: true, fd, bytes };
  });
}

/**
 * Sets O_NONBLOCK on a descriptor (fcntl F_GETFL, F_SETFL): its writes then
 * return EAGAIN when the pipe or socket is full. The flag belongs to the open
 * file description, so whoever shares it (a process that handed it down as
 * stdout and kept it) sees it too: `restore` puts the flags back as they were.
 * With `on` false, clears it: writes then wait in the kernel.
 */
export function setNonBlocking(fd: number, on = true): { ok: true; fd: number; restore: () => void } | SocketOptionFailure {
  const call = "fcntl(F_SETFL)";
  return withLibc(call, fd, (libc) => {
    const flags = libc.fcntl(fd, F_GETFL, 0);
    if (flags < 0 || libc.fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0) return syscallFailed(libc, call, fd);
    return { ok: true as const, fd, restore: () => void libc.fcntl(fd, F_SETFL, flags) };
  });
}

/**
 * Shuts down the receiving side of a listening Unix socket: the kernel then
 * refuses new connections (ECONNREFUSED), while those already in its accept
 * queue can still be accepted. Closing a listener instead resets what its
 * queue holds, and the bytes its clients wrote are lost unseen.
 */
export function refuseConnections(fd: number): { ok: true; fd: number } | SocketOptionFailure {
  return shutDownReading(fd);
}

/**
 * Shuts down the receiving side of a connected Unix socket: the peer's writes
 * fail from then on (EPIPE), while what it wrote before is still read, then
 * the end. Closing instead discards what is unread, which the peer counted as
 * sent.
 */
export function shutDownReading(fd: number): { ok: true; fd: number } | SocketOptionFailure {
  const call = "shutdown(SHUT_RD)";
  return withLibc(call, fd, (libc) => (libc.shutdown(fd, SHUT_RD) === 0 ? { ok: true as const, fd } : syscallFailed(libc, call, fd)));
}
