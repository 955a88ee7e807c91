/**
 * `bun run bench [-- --quick | --only live,startup | --no-native | --help]`
 *
 * The benchmark lives in src/bench/bench.ts (so the compiled binary carries it
 * as `audio-agent bench`); this entry adds what only a checkout has: results
 * written to bench/results/, a fresh compiled binary for the live and
 * start-up scenarios built with the project's own build.ts, and
 * examples/tone.opus as the live source.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { bench } from "../src/bench/bench.ts";
import { runCli } from "../src/cli/run.ts";

const ROOT = resolve(import.meta.dir, "..");

/** Builds src/main.ts for this machine with build.ts; falls back to dist/ when the build fails. */
async function agentBinary(log: (line: string) => void, outdir: string): Promise<string | undefined> {
  const target = process.arch === "arm64" ? "arm64" : "x64";
  log(`building the agent (bun build.ts --target ${target}) for the live and start-up scenarios`);
  const built = Bun.spawnSync([process.execPath, join(ROOT, "build.ts"), "--target", target, "--outdir", outdir], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const fresh = join(outdir, `audio-agent-linux-${target}`);
  if (built.exitCode === 0 && existsSync(fresh)) return fresh;
  log(`build failed (${built.stderr.toString().trim().split("\n").pop()}); trying dist/`);
  const dist = join(ROOT, "dist", `audio-agent-linux-${target}`);
  return existsSync(dist) ? dist : undefined;
}

// Drivers re-enter as `<bun> bench/run.ts bench --driver ...`, the same shape as the compiled `audio-agent bench`.
// Compiled itself (to try `audio-agent bench` before run.ts routes it), this file also answers the agent's own
// commands, so the start-up scenario can run `output serve` from it; only a checkout has bench/results/ and build.ts.
const argv = process.argv.slice(2);
const compiled = Bun.main.startsWith("/$bunfs/");
const isBench = argv.length === 0 || argv[0] === "bench" || (argv[0].startsWith("-") && !["--version", "-V"].includes(argv[0]));
const code = isBench
  ? await bench(
      argv[0] === "bench" ? argv.slice(1) : argv,
      compiled ? {} : { resultsDir: join(ROOT, "bench", "results"), agentBinary, opusSource: join(ROOT, "examples", "tone.opus") },
    )
  : await runCli(argv);
process.exit(code);
