import { describe, expect, test } from "bun:test";
import { chmodSync, cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SOCK_DGRAM, SOCK_STREAM } from "../../src/io/libc.ts";
import { probeUnixSocket, useProbeLibc } from "../../src/io/unix-probe.ts";
import { bindSocket } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { asNobody, canSwitchUser } from "../support/nobody.ts";
import { openFiles } from "../support/proc.ts";
import { BUN, makeStaleSocket, REPO, run } from "../support/processes.ts";
import { closeConnections, queueConnections } from "../support/queued-connections.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A listener at a fresh path that accepts and counts what it accepted and saw closed. */
function countingListener(prefix = "up-"): { path: string; counts: { opened: number; closed: number } } {
  const path = socketDir(defer, prefix).path("live.sock");
  const counts = { opened: 0, closed: 0 };
  const listener = Bun.listen({ unix: path, socket: { open: () => void counts.opened++, close: () => void counts.closed++, data() {} } });
  defer(() => listener.stop(true));
  return { path, counts };
}

/** A server at a fresh path that listens and never accepts, its accept queue full: what a stopped or busy server shows. */
function fullQueue(): string {
  const path = socketDir(defer, "up-").path("full.sock");
  defer(bindSocket(path, SOCK_STREAM, 0));
  const held = queueConnections(path, 100);
  defer(() => closeConnections(held));
  // Linux keeps one more than the backlog.
  expect(held.length).toBe(1);
  return path;
}

describe("probeUnixSocket: whether a server listens at a Unix socket path", () => {
  test("a live server: true, and the probe's connection is closed at once", async () => {
    const { path, counts } = countingListener();
    expect(await probeUnixSocket(path, 10_000)).toBe(true);
    await until(() => counts.closed >= 1, "the probe's connection closed at the server");
    expect(counts).toEqual({ opened: 1, closed: 1 });
  });

  test("a live server whose accept queue is full (stopped, or busy): true, where the kernel turns the connect away with EAGAIN", async () => {
    const path = fullQueue();
    expect(await probeUnixSocket(path, 10_000)).toBe(true);
  });

  test("a stale socket (its server killed), no file at all: false; a regular file, a directory: false too, as Linux refuses a connect to a file that is no socket (ECONNREFUSED)", async () => {
    const t = socketDir(defer, "up-");
    await makeStaleSocket(t.path("stale.sock"));
    writeFileSync(t.path("plain"), "");
    mkdirSync(t.path("dir"));
    for (const name of ["stale.sock", "none.sock", "plain", "dir"]) expect(await probeUnixSocket(t.path(name), 10_000)).toBe(false);
  });

  test("a live datagram socket: EPROTOTYPE, neither a server nor a dead socket", async () => {
    const path = socketDir(defer, "up-").path("d.sock");
    defer(bindSocket(path, SOCK_DGRAM));
    expect(await probeUnixSocket(path, 10_000)).toBe("EPROTOTYPE");
  });

  test("a relative path beginning with @ is a file in the working directory, not an abstract name", async () => {
    const t = socketDir(defer, "up-");
    const listener = Bun.listen({ unix: t.path("@s.sock"), socket: { data() {} } });
    defer(() => listener.stop(true));
    const cwd = process.cwd();
    process.chdir(t.dir);
    try {
      expect(await probeUnixSocket("@s.sock", 10_000)).toBe(true);
      expect(await probeUnixSocket("@none.sock", 10_000)).toBe(false);
    } finally {
      process.chdir(cwd);
    }
  });

  test("no descriptor is left open, whatever the answer", async () => {
    const { path: live, counts } = countingListener();
    const full = fullQueue();
    const t = socketDir(defer, "up-");
    await makeStaleSocket(t.path("stale.sock"));
    const datagram = t.path("d.sock");
    defer(bindSocket(datagram, SOCK_DGRAM));
    // Longer than sun_path holds: the kernel's EINVAL.
    const tooLong = `${t.dir}/${"x".repeat(120)}`;
    // Descriptors by what they refer to (a socket by its inode): the test process may meanwhile close
    // some an earlier test left to close, so a count could fall by as many as a probe left open.
    const before = new Set(openFiles(process.pid));
    const answers = new Set<boolean | string>();
    for (let i = 0; i < 50; i++) {
      for (const path of [live, full, t.path("stale.sock"), t.path("none.sock"), datagram, tooLong]) answers.add(await probeUnixSocket(path, 10_000));
    }
    expect(answers).toEqual(new Set([true, false, "EPROTOTYPE", "EINVAL"]));
    // The live server's ends of the probes' connections close as it sees them closed.
    await until(() => counts.closed >= 50, "the probes' connections closed at the server");
    expect(counts).toEqual({ opened: 50, closed: 50 });
    expect(openFiles(process.pid).filter((file) => !before.has(file))).toEqual([]);
  });
});

describe("probeUnixSocket where no libc can be loaded: asked through Bun.connect", () => {
  test("a live server: true; a stale socket, no file: false", async () => {
    defer(() => useProbeLibc());
    expect(useProbeLibc([])).toStartWith("no libc could be loaded");
    const { path } = countingListener();
    const t = socketDir(defer, "up-");
    await makeStaleSocket(t.path("stale.sock"));
    expect(await probeUnixSocket(path, 10_000)).toBe(true);
    expect(await probeUnixSocket(t.path("stale.sock"), 10_000)).toBe(false);
    expect(await probeUnixSocket(t.path("none.sock"), 10_000)).toBe(false);
  });
});

describe.skipIf(!canSwitchUser)("probeUnixSocket as another user (nobody)", () => {
  test("a live server behind a directory nobody may not search: EACCES, which tells neither", async () => {
    const t = socketDir(defer, "up-");
    chmodSync(t.dir, 0o755);
    mkdirSync(t.path("closed"), { mode: 0o700 });
    const path = t.path("closed/s.sock");
    const listener = Bun.listen({ unix: path, socket: { data() {} } });
    defer(() => listener.stop(true));
    // A copy nobody can read, in the layout its imports expect.
    cpSync(join(REPO, "src/io"), t.path("io"), { recursive: true });
    const script = `console.log(await (await import("./io/unix-probe.ts")).probeUnixSocket(${JSON.stringify(path)}, 10000))`;
    const result = await run(asNobody(t.dir, [BUN, "-e", script]), { cwd: t.dir });
    expect(result.stdout.trim(), result.stderr).toBe("EACCES");
  });
});
