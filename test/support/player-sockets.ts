/**
 * Sockets a test holds as a player on a child's stdout: a connected pair of
 * Unix stream sockets (socketpair(2) through libc), since Bun's own stdout
 * pipe for a child is read by Bun ahead of the test (about 256 KiB) and so
 * cannot stand for a player that stalls; one that stalls until released;
 * and a TCP player that resets.
 */
import { ptr } from "bun:ffi";
import { closeSync, readSync, writeFileSync } from "node:fs";
import { AF_UNIX, openLibc, SOCK_STREAM } from "../../src/io/libc.ts";
import { setNonBlocking, SOL_SOCKET } from "../../src/transport/socket-options.ts";
import { spawnAgent, type Spawned } from "./processes.ts";

const SOCKET_TYPE = { stream: SOCK_STREAM, seqpacket: 5 } as const;
const SO_LINGER = 13;

/** Two connected descriptors: the child's end, and the player's (the test's). */
export function socketPair(type: keyof typeof SOCKET_TYPE = "stream"): { childEnd: number; playerEnd: number } {
  const opened = openLibc({ socketpair: { args: ["i32", "i32", "i32", "ptr"], returns: "i32" } });
  if (!opened.library) throw new Error(opened.detail);
  try {
    const fds = new Int32Array(2);
    if (opened.library.symbols.socketpair(AF_UNIX, SOCKET_TYPE[type], 0, ptr(fds)) !== 0) throw new Error(`socketpair(AF_UNIX, ${type}) failed`);
    return { childEnd: fds[0]!, playerEnd: fds[1]! };
  } finally {
    opened.library.close();
  }
}

/**
 * Reads `fd` to its end (every writer gone) without blocking the test, and
 * closes it: the bytes it held. Fails after `timeoutMs`.
 */
export async function readToEnd(fd: number, timeoutMs = 30_000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const chunk = new Uint8Array(65536);
  const deadline = performance.now() + timeoutMs;
  try {
    const set = setNonBlocking(fd);
    if (!set.ok) throw new Error(set.message);
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        if (performance.now() > deadline) throw new Error(`fd ${fd} not at its end after ${timeoutMs} ms`);
        await Bun.sleep(10);
        continue;
      }
      if (n === 0) return Buffer.concat(chunks);
      chunks.push(chunk.slice(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes closing `fd` reset the connection (SO_LINGER on, 0 s: an RST, not a
 * FIN), as a player that crashes with audio unread does: the writer's next
 * write fails with ECONNRESET.
 */
export function resetOnClose(fd: number): void {
  const opened = openLibc({ setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" } });
  if (!opened.library) throw new Error(opened.detail);
  try {
    // struct linger { int l_onoff; int l_linger; }
    const linger = new Int32Array([1, 0]);
    if (opened.library.symbols.setsockopt(fd, SOL_SOCKET, SO_LINGER, ptr(linger), 8) !== 0) throw new Error(`setsockopt(SO_LINGER) on fd ${fd} failed`);
  } finally {
    opened.library.close();
  }
}

/**
 * A player on a socket that stalls (a parent that spawned the agent with
 * socketpair stdio): `agentOnIt` spawns an agent whose stdout is one end of a
 * pair; the other reads nothing until `release()`, then reads to the end and
 * writes what it read into `heard`, and `player.exited` resolves (0).
 */
export function heldSocketPlayer(heard: string): { player: { exited: Promise<number> }; agentOnIt: (args: string[]) => Spawned; release: () => void } {
  const pair = socketPair();
  const exited = Promise.withResolvers<number>();
  const agentOnIt = (args: string[]) => {
    try {
      return spawnAgent(args, { stdout: pair.childEnd });
    } finally {
      closeSync(pair.childEnd);
    }
  };
  const release = () => {
    readToEnd(pair.playerEnd).then((bytes) => {
      writeFileSync(heard, bytes);
      exited.resolve(0);
    }, exited.reject);
  };
  return { player: { exited: exited.promise }, agentOnIt, release };
}
