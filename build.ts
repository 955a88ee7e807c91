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
 */
import { statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { compileExecutable } from "./src/bench/compile.ts";

const ROOT = import.meta.dir;

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
    });
  } catch (e) {
    throw new Error(`build of ${target} failed:\n${(e as Error).message}`);
  }
  const sourcemap = result.outputs.find((o) => o.kind === "sourcemap")?.path;
  return { target, path: outfile, bytes: statSync(outfile).size, sourcemap };
}

function parseArgs(argv: string[]): { targets: TargetName[]; outdir: string } {
  const targets: TargetName[] = [];
  let outdir = join(ROOT, "dist");
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
    } else if (flag === "--help" || flag === "-h") {
      console.log("usage: bun build.ts [--target x64|arm64|arm64-musl]... [--outdir DIR]");
      process.exit(0);
    } else {
      throw new Error(`unknown argument "${arg}"; usage: bun build.ts [--target NAME]... [--outdir DIR]`);
    }
  }
  return { targets: targets.length > 0 ? [...new Set(targets)] : (Object.keys(TARGETS) as TargetName[]), outdir };
}

function megabytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

if (import.meta.main) {
  try {
    const { targets, outdir } = parseArgs(process.argv.slice(2));
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
