/**
 * The compiled executables the build tests run: each target built by
 * build.ts once per test process, into a temp dir removed when it ends.
 */
import { existsSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { BUN, REPO, run } from "./processes.ts";

export type Target = "x64" | "arm64" | "arm64-musl";

export interface Built {
  path: string;
  bytes: number;
  /** The commit build.ts baked in (from its first output line). */
  commit: string;
}

let outdir: string | undefined;
const builds = new Map<Target, Promise<Built>>();

/** The executable of `target`, built by `bun build.ts --target T --outdir <temp>` once per test process. */
export function built(target: Target): Promise<Built> {
  let build = builds.get(target);
  if (!build) {
    build = buildOnce(target);
    builds.set(target, build);
  }
  return build;
}

async function buildOnce(target: Target): Promise<Built> {
  if (!outdir) {
    outdir = mkdtempSync("/tmp/aa-dist-");
    removeWhenGone(outdir);
  }
  const result = await run([BUN, join(REPO, "build.ts"), "--target", target, "--outdir", outdir], { cwd: REPO, env: process.env as Record<string, string>, timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`bun build.ts --target ${target} failed (${result.code}):\n${result.stdout}${result.stderr}`);
  const commit = /^audio-agent commit (\S+)$/m.exec(result.stdout)?.[1];
  const path = join(outdir, `audio-agent-linux-${target}`);
  const line = result.stdout.split("\n").find((l) => l.includes(`audio-agent-linux-${target} `));
  const bytes = Number(/(\d+) bytes/.exec(line ?? "")?.[1]);
  if (!commit || !existsSync(path) || !(bytes > 0)) throw new Error(`unexpected build output:\n${result.stdout}`);
  return { path, bytes, commit };
}

/**
 * The builds are shared by every file of the test run, and bun test has no
 * hook after the last file (nor does it emit "exit"): a small shell waits for
 * this process to end, then removes `dir` (~100 MB per target).
 */
export function removeWhenGone(dir: string): void {
  const watcher = Bun.spawn(["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; rm -rf "$1"', String(process.pid), dir], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  watcher.unref();
}
