/**
 * Named pipes as an encoder sees them: made with mkfifo, written by a real
 * process that opens the FIFO, writes a file into it and closes it.
 */
import { ptr } from "bun:ffi";
import { closeSync, constants, openSync, readSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { openLibc } from "../../src/io/libc.ts";
import { spawnAgent, start, type Spawned } from "./processes.ts";

/** What a non-blocking reader's end holds now, read until EAGAIN or its end. */
export function readAvailable(fd: number): Uint8Array {
  const parts: Uint8Array[] = [];
  const chunk = new Uint8Array(65536);
  for (;;) {
    let got = 0;
    try {
      got = readSync(fd, chunk);
    } catch {
      break; // EAGAIN: all there is
    }
    if (got <= 0) break;
    parts.push(chunk.slice(0, got));
  }
  return new Uint8Array(Buffer.concat(parts));
}

/** What a non-blocking reader's end holds now, as text. */
export function readAvailableText(fd: number): string {
  return Buffer.from(readAvailable(fd)).toString();
}

export function makeFifo(path: string): string {
  const made = Bun.spawnSync(["mkfifo", path], { stderr: "pipe" });
  if (made.exitCode !== 0 || !statSync(path).isFIFO()) throw new Error(`mkfifo ${path} failed: ${made.stderr}`);
  return path;
}

/**
 * A player that stalls: `sh -c HELD_READER FIFO OUT` opens the FIFO, reads
 * nothing until releaseReader(OUT), then reads it to its end into OUT.
 */
export const HELD_READER = `exec 3<"$0"; while [ ! -e "$1.go" ]; do sleep 0.01; done; exec cat <&3 > "$1"`;

/** Lets a HELD_READER writing into `out` read. */
export function releaseReader(out: string): void {
  writeFileSync(`${out}.go`, "");
}

/**
 * A FIFO made at `fifo` with a HELD_READER on it, which writes what it reads
 * into `heard` once releaseReader(heard); `agentOnIt` spawns an agent whose
 * stdout is that FIFO (opened once the reader has it open); `release()` lets
 * the reader read.
 */
export function heldPlayer(fifo: string, heard: string): { player: Spawned; agentOnIt: (args: string[]) => Spawned; release: () => void } {
  makeFifo(fifo);
  const player = start(["sh", "-c", HELD_READER, fifo, heard]);
  const agentOnIt = (args: string[]) => {
    const out = openSync(fifo, "w");
    try {
      return spawnAgent(args, { stdout: out });
    } finally {
      closeSync(out);
    }
  };
  return { player, agentOnIt, release: () => releaseReader(heard) };
}

/**
 * A FIFO made at `path` whose reader holds it open and reads nothing, filled
 * until it takes no more: the reader's descriptor, and the writer's (opened
 * non-blocking) to hand a process as its output.
 */
export function fullFifo(path: string): { reader: number; writer: number } {
  makeFifo(path);
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  const block = new Uint8Array(4096);
  for (;;) {
    try {
      writeSync(writer, block);
    } catch {
      return { reader, writer }; // EAGAIN: full
    }
  }
}

/**
 * A writer process: `cat FILE > FIFO`, which waits for a reader, writes the
 * whole file and closes the FIFO. Resolves with its exit code (killed after
 * `timeoutMs`, then -1).
 */
export async function writeIntoFifo(fifo: string, file: string, timeoutMs = 30_000): Promise<number> {
  const writer = Bun.spawn(["sh", "-c", 'cat "$0" > "$1"', file, fifo], { stdout: "ignore", stderr: "inherit" });
  const timer = setTimeout(() => writer.kill("SIGKILL"), timeoutMs);
  const code = await writer.exited;
  clearTimeout(timer);
  return writer.signalCode ? -1 : code;
}

/**
 * A capture pipeline restarting as fast as it can: removes the FIFO at
 * `path` and makes it again (mkfifo(3) through libc, no process per cycle),
 * over and over for `ms`, blocking the caller; a FIFO is left at the end.
 * Returns the number of cycles.
 */
export function churnFifo(path: string, ms: number): number {
  const opened = openLibc({ mkfifo: { args: ["ptr", "u32"], returns: "i32" } });
  if (!opened.library) throw new Error(opened.detail);
  const name = Buffer.from(`${path}\0`);
  const end = performance.now() + ms;
  let cycles = 0;
  try {
    while (performance.now() < end) {
      unlinkSync(path);
      if (opened.library.symbols.mkfifo(ptr(name), 0o644) !== 0) throw new Error(`mkfifo ${path} failed`);
      cycles++;
    }
  } finally {
    opened.library.close();
  }
  return cycles;
}
