import type { Library } from "bun:ffi";
import { ERRNO_LOCATION, lastErrnoName, openLibc } from "./libc.ts";

/**
 * Connections the kernel completes for a listener and keeps until the
 * process takes them (its listen backlog; Bun listens with 512). Bun takes
 * every one waiting in one go, on the thread that paces the audio, and a peer
 * that connects and closes at once (waiting for no answer, so nothing holds
 * it back) fills the queue in a moment: 513 taken in one turn held the audio
 * 50-700 ms, about once a second. With this many, one turn takes a few ms;
 * the rest of a flood waits in the kernel.
 */
export const ACCEPT_QUEUE = 16;

const LISTEN_SYMBOLS = {
  listen: { args: ["i32", "i32"], returns: "i32" },
  __errno_location: ERRNO_LOCATION,
} as const;

let listenCall: Library<typeof LISTEN_SYMBOLS> | string | undefined;

/**
 * Bounds the kernel's queue of connections completed for `listener` and not
 * yet taken to `backlog`: listen(2) again on its descriptor, which Linux takes
 * as the new bound. Why it could not be, or undefined.
 */
export function boundAcceptQueue(listener: object, backlog = ACCEPT_QUEUE): string | undefined {
  // Bun's listener has its descriptor as `fd` (1.4.5), though its types do not say so.
  const fd = (listener as { fd?: unknown }).fd;
  if (typeof fd !== "number" || !Number.isInteger(fd) || fd < 0) return "Bun's listener has no descriptor";
  if (listenCall === undefined) {
    const opened = openLibc(LISTEN_SYMBOLS);
    listenCall = opened.library ?? opened.detail;
  }
  if (typeof listenCall === "string") return listenCall;
  if (listenCall.symbols.listen(fd, backlog) === 0) return undefined;
  return `listen(${fd}, ${backlog}) failed: ${lastErrnoName(listenCall.symbols)}`;
}
