import { describe, expect, test } from "bun:test";
import { ptr } from "bun:ffi";
import { closeSync, constants, openSync, readFileSync, readSync } from "node:fs";
import {
  getPipeSize,
  getSocketBuffers,
  libcInfo,
  loadLibcFrom,
  receiveQueueBytes,
  sendQueueBytes,
  setPipeSize,
  setNonBlocking,
  setSendBuffer,
  setSocketBuffers,
} from "../../src/transport/socket-options.ts";
import { LIBC_CANDIDATES, openLibc } from "../../src/io/libc.ts";
import { MAX_SOCKET_BUFFER_BYTES, MIN_SOCKET_BUFFER_BYTES, SOCKET_BUFFER_PRESETS } from "../../src/config.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { unixPair } from "../support/peer.ts";
import { kernelBufferBytes } from "../support/proc.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const KiB = 1024;

const defer = useCleanup();

describe("libc loading", () => {
  test("loads one of the known candidates on this machine", () => {
    const info = libcInfo();
    expect(info.loaded).toBe(true);
    if (info.loaded) expect(LIBC_CANDIDATES).toContain(info.name);
  });

  test("with no loadable libc every call returns a failure instead of throwing", () => {
    try {
      const info = loadLibcFrom(["/nonexistent/libc-a.so", "/nonexistent/libc-b.so"]);
      expect(info.loaded).toBe(false);
      if (!info.loaded) expect(info.reason).toContain("/nonexistent/libc-b.so");

      const set = setSocketBuffers(0, SOCKET_BUFFER_PRESETS.default);
      const get = getSocketBuffers(0);
      const out = sendQueueBytes(0);
      const inq = receiveQueueBytes(0);
      for (const r of [set, get, out, inq]) {
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.kind).toBe("LibcUnavailable");
      }
    } finally {
      expect(loadLibcFrom().loaded).toBe(true);
    }
  });
});

describe("presets and bounds", () => {
  test("default is 128 KiB, high-load 256 KiB, both within 32..256 KiB", () => {
    expect(MIN_SOCKET_BUFFER_BYTES).toBe(32 * KiB);
    expect(MAX_SOCKET_BUFFER_BYTES).toBe(256 * KiB);
    expect(SOCKET_BUFFER_PRESETS.default).toEqual({ sendBytes: 128 * KiB, receiveBytes: 128 * KiB });
    expect(SOCKET_BUFFER_PRESETS["high-load"]).toEqual({ sendBytes: 256 * KiB, receiveBytes: 256 * KiB });
  });
});

describe("setSocketBuffers / getSocketBuffers on real Unix sockets", () => {
  test("64 KiB reads back as 128 KiB on both the accepted and the connecting socket", async () => {
    const { client, server } = await unixPair(defer);
    for (const socket of [client, server]) {
      const result = setSocketBuffers(socket.fd, { sendBytes: 64 * KiB, receiveBytes: 64 * KiB });
      expect(result).toEqual({
        ok: true,
        fd: socket.fd,
        requested: { sendBytes: 64 * KiB, receiveBytes: 64 * KiB },
        applied: { sendBytes: 128 * KiB, receiveBytes: 128 * KiB },
      });
      expect(getSocketBuffers(socket.fd)).toEqual({
        ok: true,
        fd: socket.fd,
        sendBytes: 128 * KiB,
        receiveBytes: 128 * KiB,
      });
    }
  });

  test("send and receive sizes are set independently", async () => {
    const { client } = await unixPair(defer);
    const result = setSocketBuffers(client.fd, { sendBytes: 48 * KiB, receiveBytes: 96 * KiB });
    expect(result.ok && result.applied).toEqual({ sendBytes: 96 * KiB, receiveBytes: 192 * KiB });
  });

  test("high-load preset reads back as the kernel applied it", async () => {
    const { client, server } = await unixPair(defer);
    const preset = SOCKET_BUFFER_PRESETS["high-load"];
    const expected = {
      sendBytes: kernelBufferBytes(preset.sendBytes, "send"),
      receiveBytes: kernelBufferBytes(preset.receiveBytes, "receive"),
    };
    for (const socket of [client, server]) {
      const result = setSocketBuffers(socket.fd, preset);
      expect(result.ok && result.applied).toEqual(expected);
      const read = getSocketBuffers(socket.fd);
      expect(read.ok && { sendBytes: read.sendBytes, receiveBytes: read.receiveBytes }).toEqual(expected);
    }
  });
});

describe("setSendBuffer on a real Unix socket", () => {
  test("sets the send buffer alone and returns what the kernel applied (double); a pipe or a bad fd fails naming the call", async () => {
    const { client } = await unixPair(defer);
    const before = getSocketBuffers(client.fd);
    expect(setSendBuffer(client.fd, 8 * KiB)).toEqual({ ok: true, fd: client.fd, bytes: 16 * KiB });
    const after = getSocketBuffers(client.fd);
    expect(after.ok && before.ok && [after.sendBytes, after.receiveBytes]).toEqual([16 * KiB, before.ok ? before.receiveBytes : 0]);

    const fd = openSync("/dev/null", "r");
    try {
      const r = setSendBuffer(fd, 8 * KiB);
      expect(!r.ok && [r.call, r.code]).toEqual(["setsockopt(SO_SNDBUF)", "ENOTSOCK"]);
    } finally {
      closeSync(fd);
    }
    // What the kernel applied, read back: a request under its minimum is raised to it, not doubled.
    const least = setSendBuffer(client.fd, 1);
    const read = getSocketBuffers(client.fd);
    expect(least).toEqual({ ok: true, fd: client.fd, bytes: read.ok ? read.sendBytes : -1 });
    expect(read.ok && read.sendBytes).toBeGreaterThan(2);
    const bad = setSendBuffer(0.5, 8 * KiB);
    expect(!bad.ok && bad.kind).toBe("InvalidArgument");
  });
});

describe("setPipeSize / getPipeSize on a real pipe", () => {
  /** This machine's page size: a pipe's capacity is a power-of-two number of them. */
  const PAGE = Number(Bun.spawnSync(["getconf", "PAGESIZE"]).stdout.toString().trim());

  // The kernel rounds a request up (a power-of-two number of pages, one at least): the FIFO
  // sink's log and its bound on a slow reader must be that, not the number asked for.
  test("returns the size the kernel applied, as getPipeSize reads it from either end, not the size asked for", () => {
    expect(PAGE).toBeGreaterThan(0);
    const fifo = makeFifo(socketDir(defer, "so-").path("pipe"));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    defer(() => closeSync(reader));
    const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    defer(() => closeSync(writer));
    for (const [asked, pages] of [[1, 1], [PAGE + 1, 2], [Math.round(1.2 * PAGE), 2], [3 * PAGE, 4], [5 * PAGE - 1, 8], [2 * PAGE, 2]] as const) {
      const set = setPipeSize(writer, asked);
      const fromWriter = getPipeSize(writer);
      const fromReader = getPipeSize(reader);
      expect([asked, set]).toEqual([asked, { ok: true, fd: writer, bytes: pages * PAGE }]);
      expect(fromWriter).toEqual({ ok: true, fd: writer, bytes: pages * PAGE });
      expect(fromReader).toEqual({ ok: true, fd: reader, bytes: pages * PAGE });
    }
  });
});

describe("setNonBlocking on a real pipe", () => {
  /** A pipe(2): its read end's flags are O_RDONLY alone, 0 (a file open()ed on 64-bit Linux carries O_LARGEFILE). */
  function pipe(): { reader: number; writer: number } {
    const opened = openLibc({ pipe: { args: ["ptr"], returns: "i32" } });
    if (!opened.library) throw new Error(opened.detail);
    try {
      const fds = new Int32Array(2);
      if (opened.library.symbols.pipe(ptr(fds)) !== 0) throw new Error("pipe() failed");
      defer(() => fds.forEach((fd) => closeSync(fd)));
      return { reader: fds[0]!, writer: fds[1]! };
    } finally {
      opened.library.close();
    }
  }

  /** The descriptor's file status flags as the kernel shows them (/proc/self/fdinfo, octal). */
  function flagsOf(fd: number): number {
    const line = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").match(/^flags:\s*([0-7]+)$/m);
    if (!line) throw new Error(`no flags for fd ${fd}`);
    return parseInt(line[1]!, 8);
  }

  test("sets O_NONBLOCK on either end, the read end's flags 0 before it; a read of an empty pipe then says EAGAIN; restore puts the flags back", () => {
    const { reader, writer } = pipe();
    expect(flagsOf(reader)).toBe(0);
    for (const fd of [reader, writer]) {
      const before = flagsOf(fd);
      const set = setNonBlocking(fd);
      if (!set.ok) throw new Error(set.message);
      expect(flagsOf(fd)).toBe(before | constants.O_NONBLOCK);
      if (fd === reader) expect(() => readSync(reader, new Uint8Array(1))).toThrow(expect.objectContaining({ code: "EAGAIN" }));
      set.restore();
      expect(flagsOf(fd)).toBe(before);
    }
    const off = setNonBlocking(reader, false);
    expect(off.ok).toBe(true);
    expect(flagsOf(reader) & constants.O_NONBLOCK).toBe(0);
  });

  test("a closed descriptor fails naming the call and EBADF", () => {
    const fd = openSync("/dev/null", "r");
    closeSync(fd);
    // Synchronous right after close, so nothing in this test can have reused the number.
    const r = setNonBlocking(fd);
    expect(!r.ok && [r.call, r.code]).toEqual(["fcntl(F_SETFL)", "EBADF"]);
  });
});

describe("failures are values naming errno", () => {
  test("fd -1 gives EBADF from every call", () => {
    const results = [
      setSocketBuffers(-1, SOCKET_BUFFER_PRESETS.default),
      getSocketBuffers(-1),
      sendQueueBytes(-1),
      receiveQueueBytes(-1),
    ];
    for (const r of results) {
      expect(r.ok).toBe(false);
      if (r.ok) continue;
      expect(r.kind).toBe("SyscallFailed");
      expect(r.code).toBe("EBADF");
      expect(r.errno).toBe(9);
      expect(r.fd).toBe(-1);
      expect(r.message).toContain("EBADF");
    }
    expect(results.map((r) => !r.ok && r.call)).toEqual([
      "setsockopt(SO_SNDBUF)",
      "getsockopt(SO_SNDBUF)",
      "ioctl(TIOCOUTQ)",
      "ioctl(FIONREAD)",
    ]);
  });

  test("a closed fd gives EBADF", () => {
    const fd = openSync("/dev/null", "r");
    closeSync(fd);
    // Synchronous right after close, so nothing in this test can have reused the number.
    const r = getSocketBuffers(fd);
    expect(!r.ok && r.code).toBe("EBADF");
  });

  test("a file that is not a socket gives ENOTSOCK", () => {
    const fd = openSync("/dev/null", "r");
    try {
      const r = setSocketBuffers(fd, SOCKET_BUFFER_PRESETS.default);
      expect(!r.ok && r.code).toBe("ENOTSOCK");
    } finally {
      closeSync(fd);
    }
  });

  test("non-integer fd or size is rejected before reaching libc", () => {
    const r1 = getSocketBuffers(1.5);
    expect(!r1.ok && r1.kind).toBe("InvalidArgument");
    const r2 = setSocketBuffers(0, { sendBytes: 64 * KiB, receiveBytes: -1 });
    expect(!r2.ok && [r2.kind, r2.call]).toEqual(["InvalidArgument", "setsockopt(SO_RCVBUF)"]);
  });
});

describe("size bounds", () => {
  test("any positive int is passed to the kernel (which clamps it); 0 and 2^31 are refused before it", async () => {
    const { client } = await unixPair(defer);
    const largest = setSocketBuffers(client.fd, { sendBytes: 0x7fffffff, receiveBytes: 0x7fffffff });
    expect(largest.ok && largest.applied).toEqual({
      sendBytes: kernelBufferBytes(0x7fffffff, "send"),
      receiveBytes: kernelBufferBytes(0x7fffffff, "receive"),
    });
    for (const size of [0, 0x80000000]) {
      const r = setSocketBuffers(client.fd, { sendBytes: size, receiveBytes: 64 * KiB });
      expect(!r.ok && [r.kind, r.call, r.message]).toEqual([
        "InvalidArgument",
        "setsockopt(SO_SNDBUF)",
        `setsockopt(SO_SNDBUF) on fd ${client.fd}: size must be a positive int, got ${size}`,
      ]);
    }
  });
});

describe("queue depth via ioctl", () => {
  test("both queues grow while the peer does not read, and empty once it does", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    const { client, server } = pair;
    expect(sendQueueBytes(client.fd)).toEqual({ ok: true, fd: client.fd, bytes: 0 });
    expect(receiveQueueBytes(server.fd)).toEqual({ ok: true, fd: server.fd, bytes: 0 });

    // Bun's write() does not buffer: it returns what the kernel took, so fill until it refuses.
    const chunk = new Uint8Array(16 * KiB).fill(0x5a);
    let written = 0;
    for (let i = 0; i < 10_000; i++) {
      const n = client.write(chunk);
      if (n > 0) written += n;
      if (n < chunk.length) break;
    }
    expect(written).toBeGreaterThan(0);

    const out = sendQueueBytes(client.fd);
    const inq = receiveQueueBytes(server.fd);
    // Unix sockets count buffer memory (with per-packet overhead) on the sending side, and
    // exactly the unread bytes on the receiving side.
    expect(out.ok && out.bytes).toBeGreaterThanOrEqual(written);
    expect(inq.ok && inq.bytes).toBe(written);
    expect(pair.received()).toBe(0);

    server.resume();
    await until(() => pair.received() === written, "everything written to arrive", 5000);
    expect(receiveQueueBytes(server.fd)).toEqual({ ok: true, fd: server.fd, bytes: 0 });
    expect(sendQueueBytes(client.fd)).toEqual({ ok: true, fd: client.fd, bytes: 0 });
  });
});
