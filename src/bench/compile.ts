import { LIVE_JIT_POLICY } from "../roles/jit-policy.ts";

/**
 * How a Bun program becomes a single-file executable here: the agent
 * (build.ts) and the benchmark's bare Bun floor are compiled the same way, so
 * the floor differs from the agent only in the code it runs.
 */
export interface CompileOptions {
  /** Another platform's Bun; this one's by default. */
  target?: Bun.Build.CompileTarget;
  define?: Record<string, string>;
  /** Order files recorded by runs of an earlier build (BUN_BYTECODE_ORDER_OUT), most common run first. */
  bytecodeOrder?: string[];
}

/**
 * Compiles `entry` into `outfile`; throws with the bundler's messages when it fails, and
 * before building when this process runs without its JIT.
 */
export async function compileExecutable(entry: string, outfile: string, options: CompileOptions = {}): Promise<Bun.BuildOutput> {
  // Measured: an executable compiled by a Bun started with BUN_JSC_useJIT=0 holds about 9 MiB more
  // of its own pages whenever it runs, JIT or not (bench/FINDINGS.md). The variable is for where the agent runs.
  const jit = process.env.BUN_JSC_useJIT;
  if (jit !== undefined && jit !== "1" && jit !== "true") {
    throw new Error(`BUN_JSC_useJIT=${jit} is set: an executable built under it holds about 9 MiB more at run time; unset it for the build (set it where the agent runs, see packaging/README.md)`);
  }
  const result = await Bun.build({
    entrypoints: [entry],
    compile: {
      ...(options.target ? { target: options.target } : {}),
      outfile,
      // An init script's working directory must not configure the program behind its back.
      autoloadDotenv: false,
      autoloadBunfig: false,
      autoloadTsconfig: false,
      autoloadPackageJson: false,
      // Starts with the JIT's tier-up thresholds scaled for the device's rate (src/roles/jit-policy.ts).
      jitPolicy: LIVE_JIT_POLICY,
      // The bytecode those runs used laid out together at the front: fewer pages touched at start.
      ...(options.bytecodeOrder?.length ? { bytecodeOrder: options.bytecodeOrder } : {}),
    },
    // Identifiers keep their names so stack traces show real function names;
    // renaming them would save a few KB of a ~100 MB executable.
    minify: { whitespace: true, syntax: true, identifiers: false },
    // With `compile` the map is embedded in the executable (traces point at
    // the source lines even without the .map file); "linked" also writes it beside.
    sourcemap: "linked",
    // Precompiled JavaScriptCore bytecode: the executable skips parsing its bundle at start-up
    // (measured: the agent's --version 50-60 ms -> 40 ms). Needs an entry without top-level await.
    bytecode: true,
    define: options.define,
  });
  if (!result.success) throw new Error(result.logs.map((log) => String(log)).join("\n"));
  return result;
}
