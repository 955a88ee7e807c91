/**
 * WireSink over ByteSink on real files: every message recorded exactly as
 * received, bytes held until the buffer is full or flushed, writes larger
 * than the buffer whole, and the file closed (its descriptor released) at the end.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, statSync } from "node:fs";
import { ByteSink } from "../../src/media/byte-sink.ts";
import { WireSink } from "../../src/media/wire-sink.ts";
import { FrameParser, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { useCleanup } from "../support/cleanup.ts";
import { openFiles } from "../support/proc.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire } from "../support/wire.ts";

const defer = useCleanup();

describe("WireSink", () => {
  test("records every message exactly as it came, and closes the file", async () => {
    const path = socketDir(defer, "wsk-").path("out.wire");
    const wire = indexedWire(0, 200);
    const sink = WireSink.open(path);
    expect(openFiles(process.pid)).toContain(path);
    const parser = new FrameParser(OUTPUT_MAGIC);
    parser.push(wire);
    for (let m = parser.next(); m; m = parser.next()) sink.write(m);
    sink.flush();
    expect(statSync(path).size).toBe(wire.length);
    sink.close();
    expect(openFiles(process.pid)).not.toContain(path);
    expect(new Uint8Array(readFileSync(path))).toEqual(wire);
  });
});

describe("ByteSink", () => {
  test("holds bytes until its buffer is full or flushed; a write larger than the buffer goes out whole", async () => {
    const path = socketDir(defer, "bsk-").path("out.bin");
    const sink = ByteSink.open(path, 8);
    sink.write(Uint8Array.of(1, 2, 3));
    sink.write(Uint8Array.of(4, 5, 6, 7, 8)); // exactly fills the buffer: still held
    expect(statSync(path).size).toBe(0);
    expect(sink.bytesWritten).toBe(0);
    sink.write(Uint8Array.of(9)); // no room: the full buffer goes out first
    expect(statSync(path).size).toBe(8);
    // Exactly the buffer's size, with 9 held: 9 goes out, the eight are held.
    sink.write(Uint8Array.from({ length: 8 }, (_, i) => 50 + i));
    expect(statSync(path).size).toBe(9);
    sink.flush();
    const large = Uint8Array.from({ length: 20 }, (_, i) => 100 + i);
    sink.write(Uint8Array.of(10));
    sink.write(large); // larger than the buffer: what is held, then the write itself
    expect(statSync(path).size).toBe(38);
    sink.write(Uint8Array.of(11));
    sink.close();
    expect([...readFileSync(path)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51, 52, 53, 54, 55, 56, 57, 10, ...large, 11]);
    expect(sink.bytesWritten).toBe(39);
    sink.close(); // a second close is harmless
  });

  test("a write that fails names the sink and the error", () => {
    const sink = ByteSink.open("/dev/full", 8);
    sink.write(Uint8Array.of(1));
    expect(() => sink.flush()).toThrow("cannot write to sink /dev/full: ENOSPC");
  });
});
