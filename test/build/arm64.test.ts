/**
 * The device build (linux-arm64, glibc), cross-compiled by build.ts and run
 * under qemu user-mode emulation: it starts, and two of them really stream
 * frames to each other over a Unix socket, and its monitor tells users apart
 * by the look-up a kernel without socket diagnostics gets (/proc/net/tcp).
 * Needs qemu-aarch64-static and the aarch64 glibc (Debian: qemu-user-static,
 * libc6-arm64-cross; npm test installs them).
 */
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { built, type Built } from "../support/binaries.ts";
import { useCleanup } from "../support/cleanup.ts";
import { asUser, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { firstMismatch } from "../support/payloads.ts";
import { BUN, stopAgents, run, start } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";

const QEMU = Bun.which("qemu-aarch64-static");
const SYSROOT = "/usr/aarch64-linux-gnu";

let arm64: Built;

function qemu(args: string[]): string[] {
  return [QEMU!, "-L", SYSROOT, arm64.path, ...args];
}

beforeAll(async () => {
  if (!QEMU) throw new Error("qemu-aarch64-static not found: install qemu-user-static (and libc6-arm64-cross) to test the arm64 build");
  if (!existsSync(join(SYSROOT, "lib/ld-linux-aarch64.so.1"))) throw new Error(`${SYSROOT} has no aarch64 glibc: install libc6-arm64-cross`);
  arm64 = await built("arm64");
}, 120_000);

// Processes first, then their directories (afterEach hooks run in this order).
afterEach(stopAgents);
const defer = useCleanup();

describe("compiled arm64 binary under qemu", () => {
  test("is an aarch64 executable and --version prints the version and commit", async () => {
    const header = new Uint8Array(await Bun.file(arm64.path).slice(0, 20).arrayBuffer());
    expect([...header.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]); // ELF
    expect(header[18] | (header[19] << 8)).toBe(183); // e_machine EM_AARCH64
    const { code, stdout, stderr } = await run(qemu(["--version"]), { timeoutMs: 30_000 });
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).toBe(`audio-agent ${pkg.version} (commit ${arm64.commit}, bun ${Bun.version})`);
  }, 30_000);

  test("output serve -> output recv, both arm64, stream a wire capture over a Unix socket", async () => {
    const { dir } = socketDir(defer, "aa-arm-");
    const count = 300;
    const source = join(dir, "in.wire");
    const sink = join(dir, "out.wire");
    const socket = join(dir, "o.sock");
    await writeWireFile(source, count);

    const serve = start(qemu(["output", "serve", "--source", source, "--socket", socket]), { cwd: dir, timeoutMs: 40_000 });
    const recv = start(qemu(["output", "recv", "--socket", socket, "--sink", sink, "--once", "--connect-timeout", "30"]), { cwd: dir, timeoutMs: 40_000 });
    const [served, received] = await Promise.all([serve.done, recv.done]);
    expect(served.code, served.stderr).toBe(0);
    expect(received.code, received.stderr).toBe(0);

    const frames = wholeWireFrames(sink);
    expect(frames.length).toBe(count);
    expect(firstMismatch(frames)).toBe(-1);
    expect(readdirSync(dir).sort()).toEqual(["in.wire", "out.wire"]);
  }, 45_000);

  test.skipIf(!canSwitchUser)("--monitor where qemu gives no socket diagnostics (no NETLINK_SOCK_DIAG): said at start, and each peer's user found in /proc/net/tcp: root is served the monitor, nobody only /metrics", async () => {
    const { dir } = socketDir(defer, "aa-arm-");
    chmodSync(dir, 0o755);
    const serve = start(qemu(["output", "serve", "--source", "-", "--socket", join(dir, "o.sock"), "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]), { cwd: dir, stdin: "pipe", timeoutMs: 40_000 });
    await serve.waitForStderr(/http listening url=http/, 30_000);
    expect(serve.stderr).toContain("the kernel has no socket diagnostics to ask who connects to the monitor");
    const url = /http listening url=(\S+)/.exec(serve.stderr)![1]!;
    const statuses = async (uid: number) => {
      const ask = `const out = []; for (const path of ["figures", "metrics"]) out.push((await fetch(${JSON.stringify(url)} + path)).status); console.log(out.join(" "));`;
      const asked = await start(asUser(uid, uid, dir, [BUN, "-e", ask]), { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }).done;
      expect(asked.stderr).toBe("");
      return asked.stdout.trim();
    };
    expect({ root: await statuses(0), nobody: await statuses(NOBODY) }).toEqual({ root: "200 200", nobody: "403 200" });
  }, 45_000);
});
