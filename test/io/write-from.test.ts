import { describe, expect, test } from "bun:test";
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { takeBack, writeFrom, writeFromOffLoop } from "../../src/io/write-from.ts";
import { useCleanup } from "../support/cleanup.ts";
import { fullFifo, readAvailable } from "../support/fifo.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

describe("writeFrom: writes until all is written or a write fails", () => {
  test("all of it from `at` to `end`, and how far it got", () => {
    const t = socketDir(defer, "wf-");
    const fd = openSync(t.path("f"), "w");
    defer(() => closeSync(fd));
    expect(writeFrom(fd, Buffer.from("0123456789"), 2, 8)).toEqual({ at: 8 });
    expect(writeFrom(fd, Buffer.from("ab"))).toEqual({ at: 2 });
    expect(readFileSync(t.path("f"), "utf8")).toBe("234567ab");
  });

  test("a write that fails stops it: how far it got and the errno (a full pipe's EAGAIN, a closed descriptor's EBADF)", () => {
    const t = socketDir(defer, "wf-");
    const { reader, writer } = fullFifo(t.path("p"));
    defer(() => closeSync(reader));
    defer(() => closeSync(writer));
    expect(writeFrom(writer, new Uint8Array(100), 40)).toEqual({ at: 40, code: "EAGAIN" });
    const closed = openSync(t.path("g"), "w");
    closeSync(closed);
    expect(writeFrom(closed, new Uint8Array(10))).toEqual({ at: 0, code: "EBADF" });
  });
});

describe("writeFromOffLoop: writeFrom in the thread pool", () => {
  /** Each time `done` is told, in order: how far the write got, and its errno. */
  function offLoop(fd: number, bytes: Uint8Array, at: number, end: number): { told: { at: number; code?: string }[]; first: Promise<void> } {
    const told: { at: number; code?: string }[] = [];
    const first = new Promise<void>((resolve) =>
      writeFromOffLoop(fd, bytes, at, end, (at, code) => {
        told.push(code === undefined ? { at } : { at, code });
        resolve();
      }),
    );
    return { told, first };
  }

  test("all of it from `at` to `end`: done told once, how far it got and no errno, and nothing written after", async () => {
    const t = socketDir(defer, "wf-");
    const fd = openSync(t.path("f"), "w");
    defer(() => closeSync(fd));
    const one = offLoop(fd, Buffer.from("0123456789"), 2, 8);
    await one.first;
    // A second write after it: the file holds the first's bytes once, then the second's.
    const two = offLoop(fd, Buffer.from("ab"), 0, 2);
    await two.first;
    expect(one.told).toEqual([{ at: 8 }]);
    expect(two.told).toEqual([{ at: 2 }]);
    expect(readFileSync(t.path("f"), "utf8")).toBe("234567ab");
  });

  test("a write the descriptor takes part of goes on from there; one that fails stops it: how far it got and the errno (a full pipe's EAGAIN, a closed descriptor's EBADF)", async () => {
    const t = socketDir(defer, "wf-");
    const { reader, writer } = fullFifo(t.path("p"));
    defer(() => closeSync(reader));
    defer(() => closeSync(writer));
    // Room for part of what is written, which the pipe takes before it is full again.
    const room = readSync(reader, new Uint8Array(4096));
    const bytes = new Uint8Array(3 * room).fill(7);
    const full = offLoop(writer, bytes, 40, bytes.length);
    await full.first;
    expect(full.told).toEqual([{ at: 40 + room, code: "EAGAIN" }]);
    const held = readAvailable(reader);
    expect(held.subarray(held.length - room)).toEqual(bytes.subarray(40, 40 + room));
    const closed = openSync(t.path("g"), "w");
    closeSync(closed);
    const bad = offLoop(closed, new Uint8Array(10), 0, 10);
    await bad.first;
    expect(bad.told).toEqual([{ at: 0, code: "EBADF" }]);
  });
});

describe("takeBack: a failed write's bytes taken off the file's end again", () => {
  test("the last bytes taken off", () => {
    const t = socketDir(defer, "wf-");
    const fd = openSync(t.path("f"), "a+");
    defer(() => closeSync(fd));
    writeFrom(fd, Buffer.from("line one\nline tw"));
    expect(takeBack(fd, 7)).toBe(true);
    expect(readFileSync(t.path("f"), "utf8")).toBe("line one\n");
    expect(takeBack(fd, 9)).toBe(true);
    expect(fstatSync(fd).size).toBe(0);
  });

  test("where the file holds fewer bytes than that (emptied by another meanwhile, then written again), it is left as it is, not emptied", () => {
    const t = socketDir(defer, "wf-");
    const fd = openSync(t.path("f"), "a+");
    defer(() => closeSync(fd));
    writeFrom(fd, Buffer.from("whole\n"));
    expect(takeBack(fd, 7)).toBe(false);
    expect(readFileSync(t.path("f"), "utf8")).toBe("whole\n");
  });

  test("where the file cannot be cut (a descriptor open for reading only; a closed one), it says so and the file is as it was", () => {
    // ftruncate refuses a file appended to as well where it is append-only (chattr +a): EPERM.
    const t = socketDir(defer, "wf-");
    writeFileSync(t.path("f"), "line one\nline tw");
    const reading = openSync(t.path("f"), "r");
    defer(() => closeSync(reading));
    expect(takeBack(reading, 7)).toBe(false);
    expect(readFileSync(t.path("f"), "utf8")).toBe("line one\nline tw");
    const closed = openSync(t.path("f"), "a");
    closeSync(closed);
    expect(takeBack(closed, 7)).toBe(false);
    expect(readFileSync(t.path("f"), "utf8")).toBe("line one\nline tw");
  });
});
