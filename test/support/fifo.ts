/**
 * Named pipes as an encoder sees them: made with mkfifo, written by a real
 * process that opens the FIFO, writes a file into it and closes it.
 */
import { statSync } from "node:fs";

export function makeFifo(path: string): string {
  const made = Bun.spawnSync(["mkfifo", path], { stderr: "pipe" });
  if (made.exitCode !== 0 || !statSync(path).isFIFO()) throw new Error(`mkfifo ${path} failed: ${made.stderr}`);
  return path;
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
