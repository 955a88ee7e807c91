/**
 * The Go original's output side as a peer process: its ipc.go (a copy
 * outside the repository: another project's code, never kept in it) is copied at test time
 * beside test/go-peer/ (stand-ins of our own for the rest of its package and
 * modules, and a main that runs its AudioServer or AudioClient), and built with
 * the machine's `go` once per test process.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeWhenGone } from "./binaries.ts";
import { concatBytes } from "./bytes.ts";
import { cleanEnv, REPO, run, type Spawned, start } from "./processes.ts";
import { until } from "./wait.ts";

/** The Go original's ipc.go: AUDIO_AGENT_GO_IPC, else the copy in ../shared beside the repository (as scripts/test-setup.sh looks for it). */
export const GO_IPC = process.env.AUDIO_AGENT_GO_IPC || resolve(REPO, "../shared/seeds/000_4ea07cb9858f3d5e.txt");

/** Why the Go original cannot run here (no ipc.go, no `go`), or undefined when it can. */
export function goOriginalMissing(): string | undefined {
  if (!existsSync(GO_IPC)) return `its ipc.go ${GO_IPC} is not there (set AUDIO_AGENT_GO_IPC)`;
  if (!Bun.which("go")) return "`go` is not on PATH (Debian package golang-go)";
  return undefined;
}

/** No module downloads: the stand-in modules are local `replace` directories. */
function goEnv(): Record<string, string> {
  const env = cleanEnv({ GOFLAGS: "-mod=mod", GOPROXY: "off", GOTOOLCHAIN: "local", GO111MODULE: "on" });
  if (!env.GOCACHE && !env.XDG_CACHE_HOME && !env.HOME) env.GOCACHE = "/tmp/audio-agent-go-cache";
  return env;
}

let built: Promise<string> | undefined;

/** The go-peer executable, built once per test process into a temp dir removed when the process ends. */
export function goPeer(): Promise<string> {
  built ??= buildGoPeer();
  return built;
}

async function buildGoPeer(): Promise<string> {
  const dir = mkdtempSync("/tmp/aa-go-");
  removeWhenGone(dir);
  cpSync(join(REPO, "test/go-peer"), dir, { recursive: true });
  // The copy may begin with its commit's header: the Go source starts at its package clause.
  const copy = readFileSync(GO_IPC, "utf8");
  const at = copy.search(/^package audio$/m);
  if (at < 0) throw new Error(`${GO_IPC}: no "package audio" line`);
  writeFileSync(join(dir, "internal/audio/ipc.go"), copy.slice(at));
  const exe = join(dir, "go-peer");
  const result = await run(["go", "build", "-o", exe, "./cmd/go-peer"], { cwd: dir, env: goEnv(), timeoutMs: 300_000 });
  if (result.code !== 0) throw new Error(`go build of the Go original failed (${result.code}):\n${result.stdout}${result.stderr}`);
  return exe;
}

/** Payloads as go-peer's stdin and its client's output file hold them: a u32 little-endian length before each. */
export function lengthPrefixed(payloads: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  for (const p of payloads) {
    const size = new Uint8Array(4);
    new DataView(size.buffer).setUint32(0, p.length, true);
    parts.push(size, p);
  }
  return concatBytes(parts);
}

/** The payloads of a length-prefixed file (go-peer client's output); a torn tail throws. */
export function readLengthPrefixed(path: string): Uint8Array[] {
  const bytes = new Uint8Array(readFileSync(path));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) throw new Error(`${path}: torn length at ${at}`);
    const size = view.getUint32(at, true);
    if (at + 4 + size > bytes.length) throw new Error(`${path}: torn payload at ${at}`);
    out.push(bytes.subarray(at + 4, at + 4 + size));
    at += 4 + size;
  }
  return out;
}

/** The Go original's AudioServer on `socket`, once it listens: frames go in with send(), end() closes its input (it then reports and Closes). */
export async function goServer(socket: string, args: string[] = []): Promise<{ proc: Spawned; send: (payloads: readonly Uint8Array[]) => Promise<void>; end: () => Promise<{ total: number; dropped: number; stdout: string }> }> {
  const proc = start([await goPeer(), "server", ...args], { env: cleanEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: socket }), stdin: "pipe", timeoutMs: 120_000 });
  await until(() => proc.stdout.includes("listening") || proc.hasExited, "the Go AudioServer to listen");
  if (!proc.stdout.includes("listening")) throw new Error(`go-peer server did not start:\n${proc.stdout}${proc.stderr}`);
  return {
    proc,
    send: (payloads) => proc.writeStdin(lengthPrefixed(payloads)),
    end: async () => {
      await proc.endStdin();
      const { code, stdout } = await proc.done;
      const stats = /^total=(\d+) dropped=(\d+)$/m.exec(stdout);
      if (code !== 0 || !stats) throw new Error(`go-peer server ended ${code}:\n${stdout}${proc.stderr}`);
      return { total: Number(stats[1]), dropped: Number(stats[2]), stdout };
    },
  };
}

/** The Go original's AudioClient on `socket`, its payloads written to `out`; see test/go-peer/cmd/go-peer/main.go for its flags and lines. */
export async function goClient(socket: string, out: string, args: string[] = []): Promise<Spawned> {
  return start([await goPeer(), "client", "-out", out, ...args], { env: cleanEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: socket }), timeoutMs: 120_000 });
}
