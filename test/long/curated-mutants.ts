/**
 * Mutants that once survived the suite: each stands for a real bug a test
 * should catch. The mutation run (mutants.ts) applies every one of them, and
 * fails if any survives. `find` must occur once in `file` (the first line
 * holding it is mutated); keep it in step when the code moves.
 */
export interface CuratedMutant {
  name: string;
  file: string;
  find: string;
  replace: string;
}

export const CURATED: readonly CuratedMutant[] = [
  {
    name: "no write-deadline drop",
    file: "src/transport/frame-writer.ts",
    find: "if (this.deadlineMs > 0) this.queue.dropOlderThan(now - this.deadlineMs, DropReason.WriteDeadline);",
    replace: ";",
  },
  {
    name: "an abort no longer ends the backoff sleep",
    file: "src/transport/unix-client.ts",
    find: 'signal?.addEventListener("abort", done, { once: true });',
    replace: ";",
  },
  {
    name: "Ogg page CRC never checked",
    file: "src/media/ogg-page.ts",
    find: "crcValid(): boolean {",
    replace: "crcValid(): boolean { return true;",
  },
  {
    name: "live server probed by connecting, without the /proc/net/unix check",
    file: "src/transport/socket-file.ts",
    find: "if ((await listedAsListening(path, stat)) || (await answers(path, probeTimeoutMs))) {",
    replace: "if (await answers(path, probeTimeoutMs)) {",
  },
  {
    name: "hidden socket name bound by a relative name, which /proc/net/unix cannot match",
    file: "src/transport/socket-file.ts",
    find: "const prefixes = [resolve(path), path].flatMap(",
    replace: "const prefixes = [path].flatMap(",
  },
  {
    name: "socket left with the mode a directory's default ACL narrowed it to",
    file: "src/transport/socket-file.ts",
    find: "chmodSync(hidden, mode);",
    replace: ";",
  },
  {
    name: "a stale socket that went while it was checked fails the start",
    file: "src/transport/socket-file.ts",
    find: 'if (errno(e) !== "ENOENT") throw e;',
    replace: "throw e;",
  },
  {
    name: "a new FIFO made at the source's path never followed",
    file: "src/media/fifo-source.ts",
    find: "if (stat && stat.dev === this.fifo.dev && stat.ino === this.fifo.ino) return;",
    replace: "return;",
  },
  {
    name: "Heartbeats allowed after Stop",
    file: "src/channels/input-client.ts",
    find: "if (this.queue.isFull || this.finishing) return;",
    replace: "if (this.queue.isFull) return;",
  },
];
