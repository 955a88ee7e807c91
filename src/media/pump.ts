import type { FrameSource } from "./frame-source.ts";
import type { Pacer } from "./pacer.ts";

/** What a source feeds: a sending channel end (OutputServer, InputClient). */
export interface PumpTarget {
  /** Queues one frame; false when it was dropped (and counted) instead. */
  sendFrame(payload: Uint8Array): boolean;
  /** Lossless mode: is there room for one more frame without dropping? */
  hasSpace(): boolean;
  waitForSpace(): Promise<void>;
}

export interface PumpOptions {
  /** Wait for queue space instead of letting the queue drop. */
  lossless: boolean;
  /** Present with --realtime: send each frame at its time on the source's timeline. */
  pacer?: Pacer;
  /** Start the source again at its end (file sources only). */
  loop: boolean;
  isStopped: () => boolean;
}

/**
 * How long the pump may go on reading chunks that came without the event
 * loop turning (a regular file on stdin, a pipe or FIFO written faster than
 * it is read: each read resolves at once) before it lets the loop turn: a
 * signal, a client, a scrape are taken at least that often.
 */
const PUMP_TURN_MS = 4;

/**
 * Moves every frame of a source into a send queue. Runs synchronously while
 * frames are buffered and the queue has room, so that a burst is queued in
 * one go and the writer coalesces it into few large writes; a source that
 * floods lets the event loop turn every PUMP_TURN_MS.
 */
export async function pumpSource(source: FrameSource, target: PumpTarget, options: PumpOptions): Promise<number> {
  let frames = 0;
  /** Frames at the last start from the beginning (--loop): a pass that added none would repeat forever. */
  let framesAtPass = 0;
  // Whether a turn of the event loop is awaited (an immediate set after a chunk), and when the last one came.
  let awaitingTurn = false;
  let turnedAt = performance.now();
  const turned = () => {
    awaitingTurn = false;
    turnedAt = performance.now();
  };
  while (!options.isStopped()) {
    const frame = source.next();
    if (!frame) {
      if (await source.fill()) {
        // One immediate per chunk read after a turn: live audio, whose reads wait, costs no more.
        if (!awaitingTurn) {
          awaitingTurn = true;
          setImmediate(turned);
        } else if (performance.now() - turnedAt >= PUMP_TURN_MS) {
          // Chunks kept coming without a turn: this one lets the loop turn (the immediate set first, runs first).
          await new Promise((resolve) => setImmediate(resolve));
        }
        continue;
      }
      if (options.loop && source.rewind()) {
        if (frames === framesAtPass) throw new Error(`source ${source.name} has no audio frames to loop`);
        framesAtPass = frames;
        // A source held in memory, with nothing to pace it (timestamps that never advance) and a
        // queue that never fills, would pass after pass without a turn of the event loop: no
        // socket I/O, no signal. One turn per pass keeps the agent serving and stoppable.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      // A stream that ended (stdin by any name: /dev/stdin, a pipe's /proc/self/fd/N) cannot be
      // played again: the loop asked for did not happen, and the run says so. (A FIFO source waits
      // for its next writer instead of ending.)
      if (options.loop && !options.isStopped()) throw new Error(`source ${source.name} is a stream, read once: --loop replays a file`);
      break;
    }
    if (options.lossless && !target.hasSpace()) await target.waitForSpace();
    let slept = false;
    if (options.pacer) {
      const delay = options.pacer.delayFor(frame.timeMs, frame.durationMs);
      if (delay > 0) {
        await Bun.sleep(delay);
        slept = true;
      }
    }
    // A stop while we waited: the role has discarded its queue and counted
    // every frame; one submitted now would be neither delivered nor dropped.
    if (options.isStopped()) break;
    target.sendFrame(frame.payload);
    frames++;
    // A frame that was waited for goes out before the next is read: the
    // writer's pump is a microtask queued by sendFrame, and this turn of ours
    // comes after it. Otherwise reading the next frame would delay the write,
    // and the frame's age at the receiver counts from its stamp at sendFrame.
    // Frames already due (a burst, a pacer catching up) are queued together
    // and coalesce into one write.
    if (slept) await null;
  }
  return frames;
}
