/**
 * scripts/test-setup.sh, the step `npm test` runs first: silent and quick
 * when every tool is here; with tools missing and no way to install them
 * (no apt-get on PATH), it stops with exit 1 and the one command that
 * installs exactly the missing packages.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { shellScript } from "../support/temp.ts";

const SCRIPT = resolve(import.meta.dir, "../../scripts/test-setup.sh");

/** The script run on `path`; `goIpc` is AUDIO_AGENT_GO_IPC (unset: the script looks beside the repository, as on this machine). */
function runSetup(path: string, goIpc?: string): { code: number; stdout: string; stderr: string } {
  const env: Record<string, string> = goIpc === undefined ? { PATH: path } : { PATH: path, AUDIO_AGENT_GO_IPC: goIpc };
  const result = Bun.spawnSync(["/bin/sh", SCRIPT], { env, stdout: "pipe", stderr: "pipe" });
  return { code: result.exitCode ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

describe("scripts/test-setup.sh", () => {
  test("everything present (as on this machine, set up by it): exit 0, nothing printed", () => {
    expect(runSetup(process.env.PATH ?? "/usr/bin:/bin")).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  test("tools missing and no apt-get: exit 1 with the one command installing just those packages; golang-go among them only where the Go original's ipc.go is", () => {
    const bin = mkdtempSync("/tmp/aa-setup-");
    const ipc = join(bin, "ipc.go");
    writeFileSync(ipc, "package audio\n");
    try {
      // On PATH: the opus tools, ffmpeg, oggz-validate and busybox; not promtool, qemu, systemd-analyze, setpriv, fincore, strace, socat, nc.openbsd, apt-get.
      for (const tool of ["opusenc", "opusinfo", "opusdec", "ffmpeg", "oggz-validate", "busybox"]) symlinkSync(Bun.which(tool)!, join(bin, tool));
      const byPath: [string, string][] = [
        ["libc6-arm64-cross", "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1"],
        ["chromium", "/usr/bin/chromium"],
        ["fonts-dejavu-core", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"],
        ["faketime", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"],
      ];
      const absent = (pkg: string) => byPath.some(([p, file]) => p === pkg && !existsSync(file));
      const missing = ["prometheus", "qemu-user-static", ...["libc6-arm64-cross", "chromium", "fonts-dejavu-core"].filter(absent), "systemd", "util-linux", "util-linux-extra", "strace", "socat", "netcat-openbsd", ...["faketime"].filter(absent)].join(" ");
      const told = (missing: string) => ({
        code: 1,
        stdout: "",
        stderr:
          `test setup: the tests need these Debian packages: ${missing}\n` +
          `install them with: sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends ${missing}'\n`,
      });
      expect(runSetup(bin, join(bin, "no-ipc.go"))).toEqual(told(missing));
      expect(runSetup(bin, ipc)).toEqual(told(`${missing} golang-go`));
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test.skipIf(process.getuid?.() !== 0)("as root with apt-get: updates, installs just the missing packages, checks again, exit 0", () => {
    const bin = mkdtempSync("/tmp/aa-setup-");
    try {
      for (const tool of ["sh", "id", "opusenc", "opusinfo", "opusdec", "ffmpeg", "oggz-validate", "busybox", "qemu-aarch64-static", "systemd-analyze", "fincore", "strace", "socat", "nc.openbsd"]) {
        symlinkSync(Bun.which(tool)!, join(bin, tool));
      }
      // A stand-in for the package manager (not what is tested): it records its calls, and
      // "installing" prometheus and util-linux puts the machine's promtool and setpriv on PATH.
      shellScript(
        join(bin, "apt-get"),
        `echo "$DEBIAN_FRONTEND apt-get $*" >> ${bin}/calls\n` +
          `[ "$1" = install ] && /bin/ln -s ${Bun.which("promtool")} ${bin}/promtool && /bin/ln -s ${Bun.which("setpriv")} ${bin}/setpriv\nexit 0`,
      );
      const noIpc = join(bin, "no-ipc.go");
      const result = runSetup(bin, noIpc);
      expect(result).toEqual({ code: 0, stdout: "", stderr: "test setup: installing prometheus util-linux\n" });
      expect(readFileSync(join(bin, "calls"), "utf8")).toBe(
        "noninteractive apt-get update\nnoninteractive apt-get install -y --no-install-recommends prometheus util-linux\n",
      );
      // Installed now: the next run is the quick, silent one.
      expect(runSetup(bin, noIpc)).toEqual({ code: 0, stdout: "", stderr: "" });
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
