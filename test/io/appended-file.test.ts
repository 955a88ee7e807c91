import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, unlinkSync } from "node:fs";
import { appendedFile, appends } from "../../src/io/appended-file.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** `path` opened with `flags`, closed after the test. */
function openedAt(path: string, flags: string | number): number {
  const fd = openSync(path, flags);
  defer(() => closeSync(fd));
  return fd;
}

describe("appendedFile: the file a log appends to (2>>FILE), or what it is instead", () => {
  test("a file opened for appending: its path, and it appends", () => {
    const t = socketDir(defer, "af-");
    const fd = openedAt(t.path("agent.log"), "a");
    expect(appends(fd)).toBe(true);
    expect(appendedFile(fd)).toEqual({ path: t.path("agent.log") });
  });

  test("a file opened without appending (2>FILE) does not append, and is told so", () => {
    const t = socketDir(defer, "af-");
    const fd = openedAt(t.path("agent.log"), "w");
    expect(appends(fd)).toBe(false);
    expect(appendedFile(fd)).toEqual({ not: "a file not opened for appending (2>FILE, where 2>>FILE appends)" });
  });

  test("a file appended to and removed since: no name left", () => {
    const t = socketDir(defer, "af-");
    const fd = openedAt(t.path("agent.log"), "a");
    unlinkSync(t.path("agent.log"));
    expect(appendedFile(fd)).toEqual({ not: "a file that has no name left (removed)" });
  });

  test("a pipe and a device, each in its operator's words; a closed descriptor, not to be looked at", () => {
    const t = socketDir(defer, "af-");
    const fifo = makeFifo(t.path("log.fifo"));
    const fd = openedAt(fifo, constants.O_RDWR);
    expect(appendedFile(fd)).toEqual({ not: "a pipe" });
    expect(appendedFile(openedAt("/dev/null", "a"))).toEqual({ not: "a terminal or device" });
    const closed = openSync(t.path("gone.log"), "a");
    closeSync(closed);
    expect(appendedFile(closed)).toEqual({ not: "not to be looked at (EBADF)" });
  });
});
