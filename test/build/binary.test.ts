/**
 * The compiled linux-x64 executable, built by build.ts: version and commit
 * baked in, argument parsing on the real argv of a compiled binary, no .env /
 * bunfig.toml autoloading, a real stream between two binaries, and the CLI
 * end-to-end tests rerun against it.
 */
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { compileExecutable } from "../../src/bench/compile.ts";
import { logFields } from "../support/agent-log.ts";
import { built, type Built } from "../support/binaries.ts";
import { useCleanup } from "../support/cleanup.ts";
import { firstMismatch } from "../support/payloads.ts";
import { peakRss } from "../support/proc.ts";
import { BUN, cleanEnv, stopAgents, REPO, run, start } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";

let x64: Built;

beforeAll(async () => {
  x64 = await built("x64");
}, 120_000);

// Processes first, then their directories (afterEach hooks run in this order).
afterEach(stopAgents);
const defer = useCleanup();

function tempDir(): string {
  return socketDir(defer, "aa-bin-").dir;
}

describe("compiled x64 binary", () => {
  test("--version prints the package version and the commit it was built from", async () => {
    const { code, stdout } = await run([x64.path, "--version"]);
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(`audio-agent ${pkg.version} (commit ${x64.commit}, bun ${Bun.version})`);
    // The commit is a real one (git might be absent: then build.ts says "unknown").
    if (x64.commit !== "unknown") {
      const hash = x64.commit.replace(/-dirty$/, "");
      expect(hash).toMatch(/^[0-9a-f]{7,}$/);
      expect((await run(["git", "cat-file", "-e", `${hash}^{commit}`], { cwd: REPO })).code).toBe(0);
    }
  });

  test("--help prints the usage and exits 0", async () => {
    const top = await run([x64.path, "--help"]);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain("audio-agent output serve --source");
    const role = await run([x64.path, "output", "serve", "--help"]);
    expect(role.code).toBe(0);
    expect(role.stdout).toContain("--queue-frames");
  });

  test("an unknown flag exits 2 with one line naming it", async () => {
    const { code, stdout, stderr } = await run([x64.path, "output", "serve", "--source", "x.wire", "--bogus-flag"]);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("--bogus-flag");
  });

  test("a bad value exits 2 naming the flag and the allowed values", async () => {
    const { code, stderr } = await run([x64.path, "output", "serve", "--source", "x.wire", "--drop", "sideways"]);
    expect(code).toBe(2);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("--drop");
    expect(stderr).toContain("sideways");
    expect(stderr).toContain("oldest, newest");
  });

  test("a missing --source exits 2 naming it", async () => {
    const { code, stderr } = await run([x64.path, "output", "serve"]);
    expect(code).toBe(2);
    expect(stderr).toContain("--source");
  });

  test("ignores .env and bunfig.toml in its working directory", async () => {
    const cwd = tempDir();
    // Loaded, the .env would make the agent's config fail (exit 2) and the
    // bunfig.toml would make Bun itself fail before the agent runs.
    writeFileSync(join(cwd, ".env"), "AUDIO_AGENT_LOG_LEVEL=bogus\nAUDIO_AGENT_DROP=sideways\n");
    writeFileSync(join(cwd, "bunfig.toml"), "this is [not toml\n");
    const version = await run([x64.path, "--version"], { cwd });
    expect(version.stderr).toBe("");
    expect(version.code).toBe(0);
    const serve = await run([x64.path, "output", "serve", "--source", join(cwd, "missing.wire"), "--socket", join(cwd, "o.sock")], { cwd });
    expect(serve.stderr).toContain("no such file");
    expect(serve.code).toBe(1);
    // The same .env in the environment is read by the agent: the check above is not vacuous.
    const withEnv = await run([x64.path, "output", "serve", "--source", join(cwd, "missing.wire")], { cwd, env: cleanEnv({ AUDIO_AGENT_LOG_LEVEL: "bogus" }) });
    expect(withEnv.code).toBe(2);
    expect(withEnv.stderr).toContain("AUDIO_AGENT_LOG_LEVEL");
  });

  test("streams a wire capture between two binaries over a Unix socket; every frame arrives intact", async () => {
    const cwd = tempDir();
    const count = 3000;
    const source = join(cwd, "in.wire");
    const sink = join(cwd, "out.wire");
    const socket = join(cwd, "o.sock");
    // Too large to hold in memory (over 1 MiB): read through the thread pool, with node:fs/promises loaded on demand.
    expect(await writeWireFile(source, count)).toBeGreaterThan(1 << 20);

    const serve = start([x64.path, "output", "serve", "--source", source, "--socket", socket], { cwd });
    const recv = start([x64.path, "output", "recv", "--socket", socket, "--sink", sink, "--once", "--connect-timeout", "20"], { cwd });
    const [servePeak, recvPeak, served, received] = await Promise.all([peakRss(serve.pid, serve.done), peakRss(recv.pid, recv.done), serve.done, recv.done]);
    expect(served.code, served.stderr).toBe(0);
    expect(received.code, received.stderr).toBe(0);

    const frames = wholeWireFrames(sink);
    expect(frames.length).toBe(count);
    expect(firstMismatch(frames)).toBe(-1);
    // The server removed its socket on the way out.
    expect(readdirSync(cwd).sort()).toEqual(["in.wire", "out.wire"]);

    // Peak resident memory of each side while streaming (reported, and a loose guard against leaks).
    console.log(`x64 binary peak RSS (VmHWM) while streaming ${count} frames: output serve ${(servePeak / 1024).toFixed(1)} MiB, output recv ${(recvPeak / 1024).toFixed(1)} MiB`);
    expect(servePeak).toBeGreaterThan(0);
    expect(servePeak).toBeLessThan(256 * 1024);
    expect(recvPeak).toBeLessThan(256 * 1024);
  }, 60_000);

  test("streams live at the lean JIT thresholds and returns to the normal ones when it floods", async () => {
    const cwd = tempDir();
    const source = join(cwd, "in.wire");
    await writeWireFile(source, 500);
    const pair = (name: string, live: boolean) => {
      const socket = join(cwd, `${name}.sock`);
      const serve = start([x64.path, "output", "serve", "--source", source, "--loop", ...(live ? ["--realtime"] : []), "--socket", socket], { cwd });
      const recv = start([x64.path, "output", "recv", "--socket", socket, "--sink", "/dev/null", "--format", "wire", "--connect-timeout", "20"], { cwd });
      return [serve, recv];
    };
    // A lossless loop floods (many thousands of frames a second); --realtime carries 50 a second.
    const flood = pair("flood", false);
    const live = pair("live", true);
    // serve with both channels, only its input flooded (a lossless input send): it counts every channel.
    const tone = join(REPO, "examples", "tone.opus");
    const [output, input] = [join(cwd, "serve-out.sock"), join(cwd, "serve-in.sock")];
    const serve = start(
      [x64.path, "serve", "--output-socket", output, "--output-source", source, "--output-realtime", "--output-loop", "--input-socket", input, "--input-sink", "/dev/null", "--input-format", "wire"],
      { cwd },
    );
    const send = start([x64.path, "input", "send", "--socket", input, "--source", tone, "--format", "ogg", "--loop", "--connect-timeout", "20"], { cwd });
    await Promise.all([...flood, serve].map((p) => p.waitForStderr("jit: normal thresholds from now on")));
    for (const p of [serve, send]) p.kill();
    // Two of the live pair's sampler ticks after it connected, each of which would have seen a flood.
    await live[1]!.waitForStderr("output-client: connected");
    await Bun.sleep(2500);
    for (const p of [...flood, ...live]) p.kill();
    const [floodServe, floodRecv, liveServe, liveRecv] = await Promise.all([...flood, ...live].map((p) => p.done));
    for (const r of [floodServe, floodRecv]) {
      expect(Number(logFields(r!.stderr, "instruments", "jit: normal thresholds from now on").frames_per_second)).toBeGreaterThan(1000);
    }
    for (const r of [liveServe, liveRecv]) expect(r!.stderr).not.toContain("jit:");
    // The live pair did stream meanwhile, at its rate.
    expect(Number(logFields(liveRecv!.stderr, "output-client", "stopped").frames)).toBeGreaterThan(50);
  }, 60_000);

  test("a compiled program starts at the live JIT thresholds (compile.ts bakes them in); a flood hands it the normal ones", async () => {
    const cwd = tempDir();
    const entry = join(cwd, "hot.ts");
    // A function hot enough for the optimizing JIT at normal thresholds, and the DFG compiles it got;
    // "normal": a JitPolicy (as the agent's instruments hold one) shown a second of flood first.
    writeFileSync(
      entry,
      `import { numberOfDFGCompiles } from "bun:jsc";
import { JitPolicy } from ${JSON.stringify(join(REPO, "src/roles/jit-policy.ts"))};
const add = (a: number, b: number) => (a * 31 + b) | 0;
let x = 0;
for (let i = 0; i < 200_000; i++) x = add(x, i);
if (process.argv[2] === "normal") {
  new JitPolicy(() => {}, 0, 0).sample(() => 5000, 1000);
  for (let i = 0; i < 200_000; i++) x = add(x, i);
}
console.log(numberOfDFGCompiles(add), x === 7 ? "" : "ok");
`,
    );
    const outfile = join(cwd, "hot");
    await compileExecutable(entry, outfile);
    // DFG compiles on a background thread by default: on a loaded machine the loop can end before a
    // compile it queued lands, and the count reads 0 for the wrong reason. Compiling on the main thread
    // makes the count what the thresholds decided, in both runs.
    const env = cleanEnv({ BUN_JSC_useConcurrentJIT: "0" });
    const lean = await run([outfile], { env });
    const normal = await run([outfile, "normal"], { env });
    expect(lean.code, lean.stderr).toBe(0);
    expect(lean.stdout.trim()).toBe("0 ok");
    // The same program, handed back to the normal thresholds, gets optimized: the check above is not vacuous.
    expect(Number(normal.stdout.trim().split(" ")[0])).toBeGreaterThan(0);
  }, 60_000);

  test("a compiled program lays out its bytecode by an order file a run of it recorded (compile.ts)", async () => {
    const cwd = tempDir();
    const entry = join(cwd, "ordered.ts");
    writeFileSync(
      entry,
      `import { bytecodeOrderStats } from "bun:jsc";
const used = (n: number) => n + 1;
const unused = (n: number) => n - 1;
console.log(JSON.stringify({ n: process.argv[2] === "never" ? unused(1) : used(1), stats: bytecodeOrderStats() }));
`,
    );
    const plain = join(cwd, "plain");
    await compileExecutable(entry, plain);
    const order = join(cwd, "run.order");
    const recorded = await run([plain], { env: cleanEnv({ BUN_BYTECODE_ORDER_OUT: order }) });
    expect(recorded.code, recorded.stderr).toBe(0);
    expect(JSON.parse(recorded.stdout).stats).toBeNull();
    const ordered = join(cwd, "ordered");
    await compileExecutable(entry, ordered, { bytecodeOrder: [order] });
    const stats = JSON.parse((await run([ordered])).stdout).stats;
    expect(stats).not.toBeNull();
    expect(stats.hot).toBeGreaterThan(0);
  }, 60_000);

  test("the build has a bytecode order profile for each run it lays out (build.ts --record-order)", () => {
    for (const run of ["serve", "output-recv", "input-send"]) {
      const text = readFileSync(join(REPO, "packaging", "bytecode-order", `${run}.order`), "utf8");
      const lines = text.trim().split("\n");
      expect(lines[0]).toBe("v2");
      expect(lines.length).toBeGreaterThan(1000);
      expect(lines.slice(1).every((line) => /^[A-Z] [0-9a-f]{16}$/.test(line))).toBe(true);
    }
  });

  test("build.ts run by a Bun without its JIT (BUN_JSC_useJIT=0) refuses with one line naming the variable, and writes nothing", async () => {
    const outdir = tempDir();
    const result = await run([BUN, join(REPO, "build.ts"), "--target", "x64", "--outdir", outdir], { env: cleanEnv({ BUN_JSC_useJIT: "0" }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      "build: build of linux-x64 failed: BUN_JSC_useJIT=0 is set: an executable built under it holds about 9 MiB more at run time; unset it for the build (set it where the agent runs, see packaging/README.md)\n",
    );
    expect(readdirSync(outdir)).toEqual([]);
  }, 60_000);

  test("output serve from a file it holds loads no node:fs/promises (the floor's module list); a large file does", async () => {
    const cwd = tempDir();
    /** The modules (M lines of its bytecode order record) a compiled program's run loads. */
    const loadedModules = (order: string) => new Set(readFileSync(order, "utf8").split("\n").filter((line) => line.startsWith("M ")));
    // What node:fs/promises itself adds: two runs of one compiled program, which loads it only when asked.
    const probe = join(cwd, "probe");
    writeFileSync(`${probe}.ts`, `import { statSync } from "node:fs";\nif (process.argv[2]) import("node:fs/promises").then((m) => console.log(typeof statSync, typeof m.open));\nelse console.log(typeof statSync);\n`);
    await compileExecutable(`${probe}.ts`, probe);
    const modulesOf = async (args: string[]) => {
      const order = join(cwd, `probe${args.length}.order`);
      expect((await run([probe, ...args], { env: cleanEnv({ BUN_BYTECODE_ORDER_OUT: order }) })).code).toBe(0);
      return loadedModules(order);
    };
    const without = await modulesOf([]);
    const promises = [...(await modulesOf(["promises"]))].filter((line) => !without.has(line));
    expect(promises.length).toBeGreaterThan(0);

    const servedModules = async (name: string, count: number) => {
      const source = join(cwd, `${name}.wire`);
      const bytes = await writeWireFile(source, count);
      const order = join(cwd, `${name}-serve.order`);
      const serve = start([x64.path, "output", "serve", "--source", source, "--socket", join(cwd, `${name}.sock`)], { cwd, env: cleanEnv({ BUN_BYTECODE_ORDER_OUT: order }) });
      await serve.waitForStderr("listening");
      serve.kill("SIGTERM");
      expect((await serve.done).code).toBe(0);
      return { bytes, loaded: loadedModules(order) };
    };
    const small = await servedModules("small", 20);
    expect(small.bytes).toBeLessThan(1 << 20);
    expect(promises.filter((line) => small.loaded.has(line))).toEqual([]);
    // The check can fail: a file too large to hold is read through node:fs/promises.
    const large = await servedModules("large", 3000);
    expect(large.bytes).toBeGreaterThan(1 << 20);
    expect(promises.filter((line) => large.loaded.has(line))).toEqual(promises);
  }, 60_000);

  // test/cli runs the agent through test/support/processes.ts, which runs AUDIO_AGENT_BIN
  // instead of `bun src/main.ts` when it is set: rerun those tests on the binary.
  // Not when this process already runs against a binary (no recursion).
  const cliTests = (() => {
    try {
      return readdirSync(join(REPO, "test/cli")).filter((f) => f.endsWith(".test.ts"));
    } catch {
      return [];
    }
  })();
  test.skipIf(cliTests.length === 0 || process.env.AUDIO_AGENT_BIN !== undefined)(
    "the CLI end-to-end tests pass against the binary (AUDIO_AGENT_BIN)",
    async () => {
      const { code, stdout, stderr } = await run([BUN, "test", "--timeout", "60000", "test/cli"], {
        cwd: REPO,
        env: { ...(process.env as Record<string, string>), AUDIO_AGENT_BIN: x64.path },
        // All of test/cli (about 2.5 minutes on a quiet machine of two cores): room for a slower or busier one.
        timeoutMs: 420_000,
      });
      const output = stdout + stderr;
      expect(code, output).toBe(0);
      expect(output).toMatch(/^\s*0 fail$/m);
      expect(output).not.toMatch(/^\s*0 pass$/m);
    },
    430_000,
  );
});
