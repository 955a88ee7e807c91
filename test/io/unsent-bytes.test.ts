import { describe, expect, test } from "bun:test";
import { closeSync, openSync } from "node:fs";
import { resolve } from "node:path";
import { loadUnsentBytesFrom, unsentBytes } from "../../src/io/unsent-bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { unixPair } from "../support/peer.ts";
import { BUN, run } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** Writes `chunk` on the pair's client until the kernel refuses more (its peer reads nothing): how many bytes it took. */
function fill(client: { write(bytes: Uint8Array): number }, chunk = new Uint8Array(16 * 1024).fill(0x5a)): number {
  let written = 0;
  for (let i = 0; i < 10_000; i++) {
    const n = client.write(chunk);
    if (n > 0) written += n;
    if (n < chunk.length) break;
  }
  return written;
}

describe("unsentBytes: the bytes written on a socket that its peer has not read", () => {
  // First in the file: the ioctl is loaded on the first call, not by loadUnsentBytesFrom.
  test("none on a fresh connection, at least those written while the peer reads nothing, none again once it has read them", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    expect(unsentBytes(pair.client.fd)).toBe(0);
    const written = fill(pair.client);
    expect(written).toBeGreaterThan(0);
    // A Unix socket counts the buffer memory its unread bytes hold, never less than they are.
    expect(unsentBytes(pair.client.fd)).toBeGreaterThanOrEqual(written);
    pair.server.resume();
    await until(() => pair.received() === written, "everything written to arrive", 20_000);
    expect(unsentBytes(pair.client.fd)).toBe(0);
  });

  test("descriptor 0 is a descriptor, asked: a socket a process has as its stdin", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    const written = fill(pair.client);
    expect(written).toBeGreaterThan(0);
    const module = resolve(import.meta.dir, "../../src/io/unsent-bytes.ts");
    const script = `const { unsentBytes } = await import(${JSON.stringify(module)}); console.log(unsentBytes(0));`;
    const child = await run([BUN, "-e", script], { stdin: pair.client.fd });
    expect(child.stderr).toBe("");
    expect(Number(child.stdout.trim())).toBeGreaterThanOrEqual(written);
  });

  test("-1 for what is no open socket's descriptor: negative, not a whole number (the socket's own plus a half), closed, a regular file", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    expect(fill(pair.client)).toBeGreaterThan(0);
    for (const fd of [-1, pair.client.fd + 0.5, Number.NaN]) expect(unsentBytes(fd)).toBe(-1);
    const t = socketDir(defer, "ub-");
    const file = openSync(t.path("f"), "w");
    defer(() => closeSync(file));
    expect(unsentBytes(file)).toBe(-1);
    const closed = openSync(t.path("g"), "w");
    closeSync(closed);
    expect(unsentBytes(closed)).toBe(-1);
  });
});

describe("loadUnsentBytesFrom: the ioctl loaded again from given candidates", () => {
  test("with none that opens it says so and unsentBytes answers -1 for an open socket; the libc loaded again, it answers again", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    try {
      expect(loadUnsentBytesFrom(["/nonexistent/libc.so"])).toBe(false);
      expect(unsentBytes(pair.client.fd)).toBe(-1);
    } finally {
      expect(loadUnsentBytesFrom()).toBe(true);
    }
    expect(unsentBytes(pair.client.fd)).toBe(0);
  });
});
