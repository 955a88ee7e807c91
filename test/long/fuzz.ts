/**
 * The long fuzz run: `bun run fuzz [-- options]`.
 *
 *   --target parser|wire|ogg|all   what to fuzz (default all)
 *   --seed N                       run seed, decimal or 0x-hex (env FUZZ_SEED; default random, printed)
 *   --iterations N                 cases per target (env FUZZ_ITERATIONS; default parser 200000,
 *                                  wire 5000, ogg 20000)
 *   --case I                       replay only case I of the seed (what a failure report prints)
 *   --hang-ms N                    a case taking longer than this is a hang (default 20000)
 *
 * Each target runs in a Worker under a watchdog. Any failure prints the run
 * seed, the case and the command that replays it, and the exit code is 1.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { FIXTURE_SAMPLES, makeFixtures, TONE } from "../support/opus-fixtures.ts";
import type { FuzzJob } from "./fuzz-worker.ts";
import { parseSeed, randomSeed } from "./rng.ts";

type Target = FuzzJob["target"];
const TARGETS: Target[] = ["parser", "wire", "ogg"];
const DEFAULT_ITERATIONS: Record<Target, number> = { parser: 200_000, wire: 5_000, ogg: 20_000 };

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    target: { type: "string", default: "all" },
    seed: { type: "string" },
    iterations: { type: "string" },
    case: { type: "string" },
    "hang-ms": { type: "string", default: "20000" },
  },
  strict: true,
});

const seedText = values.seed ?? process.env.FUZZ_SEED;
const seed = seedText === undefined ? randomSeed() : parseSeed(seedText);
const targets: Target[] = values.target === "all" ? TARGETS : [values.target as Target];
for (const t of targets) if (!TARGETS.includes(t)) throw new Error(`--target ${t}: allowed parser, wire, ogg, all`);
const iterationsText = values.iterations ?? process.env.FUZZ_ITERATIONS;
const single = values.case === undefined ? undefined : Number(values.case);
const hangMs = Number(values["hang-ms"]);

console.log(`fuzz: seed ${seed} (replay: bun run fuzz -- --seed ${seed}), targets ${targets.join(", ")}`);

async function runTarget(target: Target, bases: Uint8Array[]): Promise<boolean> {
  const iterations = single !== undefined ? 1 : iterationsText !== undefined ? Number(iterationsText) : DEFAULT_ITERATIONS[target];
  const from = single ?? 0;
  const progress = new SharedArrayBuffer(4);
  const current = new Int32Array(progress);
  Atomics.store(current, 0, -1);
  const worker = new Worker(new URL("./fuzz-worker.ts", import.meta.url).href);
  const started = performance.now();
  const job: FuzzJob = { target, seed, from, iterations, progress, bases };
  try {
    return await new Promise<boolean>((done) => {
      let last = -1;
      let lastChange = performance.now();
      const watchdog = setInterval(() => {
        const now = Atomics.load(current, 0);
        if (now !== last) {
          last = now;
          lastChange = performance.now();
          return;
        }
        if (performance.now() - lastChange > hangMs) {
          clearInterval(watchdog);
          console.error(
            `FAIL ${target}: case ${now} of seed ${seed} made no progress for ${hangMs} ms (hang)\n` +
              `  replay: bun run fuzz -- --target ${target} --seed ${seed} --case ${now}`,
          );
          done(false);
        }
      }, 250);
      worker.onmessage = (event) => {
        clearInterval(watchdog);
        const message = event.data as { type: string; stats?: unknown; message?: string };
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        if (message.type === "done") {
          console.log(`ok ${target}: ${iterations} case(s) from ${from} in ${seconds} s`, JSON.stringify(message.stats));
          done(true);
        } else {
          console.error(`FAIL ${target} after ${seconds} s:\n${message.message}`);
          done(false);
        }
      };
      worker.onerror = (event) => {
        clearInterval(watchdog);
        console.error(`FAIL ${target}: worker crashed at case ${Atomics.load(current, 0)} of seed ${seed}: ${event.message}`);
        done(false);
      };
      worker.postMessage(job);
    });
  } finally {
    worker.terminate();
  }
}

async function oggBases(): Promise<{ bases: Uint8Array[]; cleanup: () => void }> {
  const fixtures = makeFixtures(); // six opusenc files: mono/stereo, 10/20/60 ms frames
  const paths = [TONE, ...fixtures.opus.values()];
  const bases = paths.map((p) => new Uint8Array(readFileSync(p)));
  console.log(`ogg bases: ${paths.length} files (opusenc, ${FIXTURE_SAMPLES} samples each, and examples/tone.opus)`);
  return { bases, cleanup: fixtures.cleanup };
}

let ok = true;
const ogg = targets.includes("ogg") ? await oggBases() : undefined;
try {
  for (const target of targets) {
    if (!(await runTarget(target, target === "ogg" ? ogg!.bases : []))) ok = false;
  }
} finally {
  ogg?.cleanup();
}
console.log(ok ? `fuzz: all passed (seed ${seed})` : `fuzz: FAILED (seed ${seed})`);
process.exit(ok ? 0 : 1);
