import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, readFileSync, writeSync } from "node:fs";
import { ownNonBlockingDescription } from "../../src/io/own-description.ts";
import { useCleanup } from "../support/cleanup.ts";
import { fullFifo } from "../support/fifo.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** O_NONBLOCK among the description's flags, as /proc/self/fdinfo shows them (octal). */
function nonBlocking(fd: number): boolean {
  const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!;
  return (parseInt(flags, 8) & constants.O_NONBLOCK) !== 0;
}

describe("ownNonBlockingDescription: a pipe's or terminal's own non-blocking description", () => {
  test("a pipe: a description of its own, non-blocking, where the one shared stays blocking; a write to it when full fails at once (EAGAIN)", () => {
    const t = socketDir(defer, "od-");
    const { reader, writer } = fullFifo(t.path("p"));
    defer(() => closeSync(reader));
    defer(() => closeSync(writer));
    // The descriptor another process would share: blocking.
    const shared = openSync(t.path("p"), constants.O_WRONLY);
    defer(() => closeSync(shared));
    const own = ownNonBlockingDescription(shared)!;
    expect(own).toBeNumber();
    defer(() => closeSync(own));
    expect(nonBlocking(own)).toBe(true);
    expect(nonBlocking(shared)).toBe(false);
    expect(() => writeSync(own, new Uint8Array(4096))).toThrow(expect.objectContaining({ code: "EAGAIN" }));
  });

  test("a device (as a terminal is) gets one too; a regular file, or a closed descriptor, none", () => {
    const devNull = openSync("/dev/null", "w");
    defer(() => closeSync(devNull));
    const own = ownNonBlockingDescription(devNull)!;
    expect(own).toBeNumber();
    defer(() => closeSync(own));
    expect(nonBlocking(own)).toBe(true);
    const t = socketDir(defer, "od-");
    const file = openSync(t.path("f"), "w");
    defer(() => closeSync(file));
    expect(ownNonBlockingDescription(file)).toBeUndefined();
    const closed = openSync(t.path("g"), "w");
    closeSync(closed);
    expect(ownNonBlockingDescription(closed)).toBeUndefined();
  });
});
