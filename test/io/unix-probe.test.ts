import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { probeUnixSocket } from "../../src/io/unix-probe.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeStaleSocket } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

describe("probeUnixSocket: whether a server listens at a Unix socket path", () => {
  test("a live server: true, and the probe's connection is closed at once", async () => {
    const path = socketDir(defer, "up-").path("live.sock");
    let opened = 0;
    let closed = 0;
    const listener = Bun.listen({ unix: path, socket: { open: () => void opened++, close: () => void closed++, data() {} } });
    defer(() => listener.stop(true));
    expect(await probeUnixSocket(path, 10_000)).toBe(true);
    for (let i = 0; i < 500 && closed < 1; i++) await Bun.sleep(10);
    expect({ opened, closed }).toEqual({ opened: 1, closed: 1 });
  });

  test("a stale socket (its server killed), no file at all, a regular file, a directory: false", async () => {
    const t = socketDir(defer, "up-");
    await makeStaleSocket(t.path("stale.sock"));
    writeFileSync(t.path("plain"), "");
    mkdirSync(t.path("dir"));
    for (const name of ["stale.sock", "none.sock", "plain", "dir"]) expect(await probeUnixSocket(t.path(name), 10_000)).toBe(false);
  });
});
