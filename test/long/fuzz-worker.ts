/**
 * Runs one fuzz target inside a Worker, so that fuzz.ts can watch it: the
 * index of the case in progress is kept in shared memory, readable even
 * while this thread is stuck in a synchronous loop.
 */
import { runParserFuzz } from "./parser-fuzzer.ts";
import { runOggFuzz, runWireFuzz } from "./source-fuzzer.ts";

export interface FuzzJob {
  target: "parser" | "ogg" | "wire";
  seed: number;
  from: number;
  iterations: number;
  /** Int32Array view: [0] = case in progress. */
  progress: SharedArrayBuffer;
  /** Ogg base files. */
  bases: Uint8Array[];
}

declare const self: Worker;

self.onmessage = async (event: MessageEvent<FuzzJob>) => {
  const job = event.data;
  const current = new Int32Array(job.progress);
  const onCase = (index: number) => {
    Atomics.store(current, 0, index);
  };
  const run = { seed: job.seed, from: job.from, iterations: job.iterations, onCase };
  try {
    let stats: unknown;
    if (job.target === "parser") stats = runParserFuzz(run);
    else if (job.target === "ogg") stats = await runOggFuzz(run, job.bases);
    else stats = await runWireFuzz(run);
    postMessage({ type: "done", stats });
  } catch (e) {
    postMessage({ type: "failure", message: (e as Error)?.message ?? String(e) });
  }
};
