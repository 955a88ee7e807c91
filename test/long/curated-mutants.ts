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
    name: "Heartbeats allowed after Stop",
    file: "src/channels/input-client.ts",
    find: "if (this.queue.isFull || this.finishing) return;",
    replace: "if (this.queue.isFull) return;",
  },
];
