/**
 * Builds the single-file executables of the agent.
 *
 *   bun build.ts                       every target into dist/
 *   bun build.ts --target x64          only linux-x64 (also: arm64, arm64-musl; repeat or comma-separate)
 *   bun build.ts --outdir /tmp/aa      somewhere else
 *
 * Each binary has the package version (imported from package.json by
 * src/cli/version.ts) and the git commit baked in, and ignores `.env` and
 * `bunfig.toml` in its working directory: an init script's cwd must not
 * configure the agent behind its back (src/bench/compile.ts, which also
 * compiles the benchmark's bare Bun floor the same way). Cross targets download that
 * platform's Bun from the npm registry on first use (cached afterwards).
 *
 *   bun build.ts --record-order        records packaging/bytecode-order/ anew
 *
 * The bytecode is laid out by what the device's processes ran (profiles in
 * packaging/bytecode-order/, recorded from this machine's build streaming
 * live; a profile from an older build still applies to the functions that
 * did not change): a process touches fewer pages of it, about 1.7 MiB less
 * resident (bench/FINDINGS.md). Record again after large changes.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { compileExecutable } from "./src/bench/compile.ts";

const ROOT = import.meta.dir;

/** The runs whose bytecode comes first, the device's own first: one serve process, and the main app's two clients. */
const ORDER_DIR = join(ROOT, "packaging", "bytecode-order");
const ORDER_RUNS = ["serve", "output-recv", "input-send"] as const;
const orderFile = (run: string) => join(ORDER_DIR, `${run}.order`);

/** Short names -> Bun compile targets; the artifact is `audio-agent-<name>`. */
export const TARGETS = {
  // The JetKVM device: glibc userland on aarch64.
  "linux-arm64": "bun-linux-arm64",
  "linux-arm64-musl": "bun-linux-arm64-musl",
  "linux-x64": "bun-linux-x64",
} as const satisfies Record<string, Bun.Build.CompileTarget>;

export type TargetName = keyof typeof TARGETS;

export interface Artifact {
  target: TargetName;
  path: string;
  bytes: number;
  /** The embedded source map also written beside the binary (for tools; the binary does not need it). */
  sourcemap?: string;
}

/** `git rev-parse --short HEAD`, "-dirty" when tracked files differ from it; "unknown" outside git. */
export function gitCommit(cwd = ROOT): string {
  const git = (...args: string[]) => Bun.spawnSync(["git", ...args], { cwd, stdout: "pipe", stderr: "ignore" });
  try {
    const head = git("rev-parse", "--short", "HEAD");
    if (head.exitCode !== 0) return "unknown";
    const commit = head.stdout.toString().trim();
    // Untracked files are ignored, like `git describe --dirty`: only edits to committed files count.
    const status = git("status", "--porcelain", "--untracked-files=no");
    const dirty = status.exitCode !== 0 || status.stdout.toString().trim() !== "";
    return commit + (dirty ? "-dirty" : "");
  } catch {
    return "unknown"; // no git binary
  }
}

/** "x64", "linux-x64" or "bun-linux-x64" -> "linux-x64". */
export function targetName(text: string): TargetName {
  const name = text.replace(/^bun-/, "").replace(/^(?!linux-)/, "linux-");
  if (name in TARGETS) return name as TargetName;
  throw new Error(`unknown target "${text}"; allowed: ${Object.keys(TARGETS).map((t) => t.replace(/^linux-/, "")).join(", ")}`);
}

export async function buildTarget(target: TargetName, outdir: string, commit = gitCommit()): Promise<Artifact> {
  const outfile = join(outdir, `audio-agent-${target}`);
  let result: Bun.BuildOutput;
  try {
    result = await compileExecutable(join(ROOT, "src/main.ts"), outfile, {
      target: TARGETS[target],
      define: { AUDIO_AGENT_COMMIT: JSON.stringify(commit) },
      bytecodeOrder: ORDER_RUNS.map(orderFile).filter((file) => existsSync(file)),
    });
  } catch (e) {
    // The bundler's messages below, one to a line; a single reason on the same line.
    const message = (e as Error).message;
    throw new Error(`build of ${target} failed:${message.includes("\n") ? "\n" : " "}${message}`);
  }
  const sourcemap = result.outputs.find((o) => o.kind === "sourcemap")?.path;
  return { target, path: outfile, bytes: statSync(outfile).size, sourcemap };
}

function parseArgs(argv: string[]): { targets: TargetName[]; outdir: string; recordOnly: boolean } {
  const targets: TargetName[] = [];
  let outdir = join(ROOT, "dist");
  let recordOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === "") throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === "--target") {
      for (const t of value().split(",")) targets.push(targetName(t.trim()));
    } else if (flag === "--outdir") {
      outdir = resolve(value());
    } else if (flag === "--record-order") {
      recordOnly = true;
    } else if (flag === "--help" || flag === "-h") {
      console.log("usage: bun build.ts [--target x64|arm64|arm64-musl]... [--outdir DIR] | --record-order");
      process.exit(0);
    } else {
      throw new Error(`unknown argument "${arg}"; usage: bun build.ts [--target NAME]... [--outdir DIR] | --record-order`);
    }
  }
  return { targets: targets.length > 0 ? [...new Set(targets)] : (Object.keys(TARGETS) as TargetName[]), outdir, recordOnly };
}

/**
 * Records packaging/bytecode-order/ from a fresh build for this machine:
 * `serve` streaming both channels live to an `output recv` and from an
 * `input send`, as on the device, for a few seconds each process; each writes
 * the functions it ran when it stops.
 */
async function recordOrder(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "aa-order-"));
  try {
    const target = process.arch === "arm64" ? "linux-arm64" : "linux-x64";
    const { path: agent } = await buildTarget(target, work, gitCommit());
    const tone = join(ROOT, "examples", "tone.opus");
    const [output, input] = [join(work, "out.sock"), join(work, "in.sock")];
    const start = (run: (typeof ORDER_RUNS)[number], args: string[]) =>
      Bun.spawn([agent, ...args], { env: { ...process.env, BUN_BYTECODE_ORDER_OUT: join(work, `${run}.order`) }, stdout: "ignore", stderr: "pipe" });
    const serve = start("serve", ["serve", "--output-socket", output, "--output-source", tone, "--output-format", "ogg", "--output-realtime", "--output-loop", "--input-socket", input, "--input-sink", join(work, "in.opus"), "--input-format", "ogg"]);
    while (!existsSync(output) || !existsSync(input)) {
      if (serve.exitCode !== null) throw new Error(`serve exited ${serve.exitCode}: ${await new Response(serve.stderr).text()}`);
      await Bun.sleep(5);
    }
    const clients = [
      start("output-recv", ["output", "recv", "--socket", output, "--sink", join(work, "out.opus"), "--format", "ogg"]),
      start("input-send", ["input", "send", "--socket", input, "--source", tone, "--format", "ogg", "--realtime", "--loop"]),
    ];
    await Bun.sleep(4000);
    for (const p of [...clients, serve]) p.kill("SIGTERM");
    await Promise.all([...clients, serve].map((p) => p.exited));
    mkdirSync(ORDER_DIR, { recursive: true });
    for (const run of ORDER_RUNS) {
      const recorded = join(work, `${run}.order`);
      if (!existsSync(recorded)) throw new Error(`${run} wrote no order file`);
      copyFileSync(recorded, orderFile(run));
      chmodSync(orderFile(run), 0o644);
      console.log(`${relative(process.cwd(), orderFile(run))}  ${statSync(recorded).size} bytes`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function megabytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

if (import.meta.main) {
  try {
    const { targets, outdir, recordOnly } = parseArgs(process.argv.slice(2));
    if (recordOnly) {
      await recordOrder();
      process.exit(0);
    }
    const commit = gitCommit();
    console.log(`audio-agent commit ${commit}`);
    for (const target of targets) {
      const started = performance.now();
      const artifact = await buildTarget(target, outdir, commit);
      const rel = relative(process.cwd(), artifact.path);
      const where = rel.startsWith("..") ? artifact.path : rel;
      const ms = Math.round(performance.now() - started);
      console.log(`${where}  ${artifact.bytes} bytes (${megabytes(artifact.bytes)})  ${ms} ms`);
    }
  } catch (e) {
    console.error(`build: ${(e as Error).message}`);
    process.exit(1);
  }
}
