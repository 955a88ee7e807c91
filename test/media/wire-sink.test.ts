/**
 * WireSink over ByteSink on real files: every message recorded exactly as
 * received, bytes held until the buffer is full or flushed, writes larger
 * than the buffer whole, and the file closed (its descriptor released) at the end.
 * A write that fails (/dev/full, a FIFO whose reader left, a TCP reader that
 * reset the connection) counts the frames it could not write whole.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import { ByteSink, TAIL_BYTES } from "../../src/media/byte-sink.ts";
import { OggSink } from "../../src/media/ogg-sink.ts";
import { WireSink } from "../../src/media/wire-sink.ts";
import { FileFormatError } from "../../src/media/file-format.ts";
import { openSink } from "../../src/media/open.ts";
import { encodeMessage, FrameParser, INPUT_MAGIC, MessageType, OUTPUT_MAGIC, type ParsedMessage } from "../../src/protocol/index.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { pagesOf } from "../support/ogg.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo, readAvailable } from "../support/fifo.ts";
import { withFileSizeLimit } from "../support/machine.ts";
import { bytesReadHere, openFiles } from "../support/proc.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire, wireHeader } from "../support/wire.ts";

const defer = useCleanup();

/** One OpusFrame carrying `payload`, parsed as a receiver gets it. */
function opusMessage(payload: Uint8Array): ParsedMessage {
  const parser = new FrameParser(OUTPUT_MAGIC);
  parser.push(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payload));
  return parser.next()!;
}

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
    await sink.close();
    expect(openFiles(process.pid)).not.toContain(path);
    expect(new Uint8Array(readFileSync(path))).toEqual(wire);
  });
});

describe("ByteSink", () => {
  test("holds bytes until its buffer is full or flushed; a write larger than the buffer goes out whole", async () => {
    const path = socketDir(defer, "bsk-").path("out.bin");
    const sink = ByteSink.open(path, { capacity: 8 });
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
    const sink = ByteSink.open("/dev/full", { capacity: 8 });
    sink.write(Uint8Array.of(1));
    expect(() => sink.flush()).toThrow("cannot write to sink /dev/full: ENOSPC");
  });
});

/** Writes a script to `path` that runs `body` with ByteSink imported: for a child process with limits or a stdout of its own. */
function byteSinkScript(path: string, body: string): string {
  writeFileSync(path, `import { ByteSink } from ${JSON.stringify(`${import.meta.dir}/../../src/media/byte-sink.ts`)};\n${body}`);
  return path;
}

describe("ByteSink: every frame written or counted when a write fails", () => {
  const unit = (n: number) => new Uint8Array(n).fill(7);

  test("a failed flush counts the buffered frames (sink_write_failed), is raised once, and what follows is counted, not written", () => {
    const sink = ByteSink.open("/dev/full");
    sink.write(unit(40)); // a header: no frame
    for (let i = 0; i < 5; i++) sink.write(unit(30), 2);
    expect(() => sink.flush()).toThrow("cannot write to sink /dev/full: ENOSPC");
    expect(sink.dropped).toEqual({ sink_no_reader: 0, sink_write_failed: 10, sink_reader_slow: 0 });
    expect(sink.write(unit(30), 3)).toBe(false);
    expect(sink.dropped.sink_write_failed).toBe(13);
    // Raised again by every flush and close: one called where the error is lost (a socket's handler) leaves it failed.
    expect(() => sink.flush()).toThrow("ENOSPC");
    expect(() => sink.close()).toThrow("ENOSPC");
    expect(sink.dropped.sink_write_failed).toBe(13);
  });

  test("a write stopped part-way counts exactly the frames it did not write whole (a file size limit stops it at a known byte)", () => {
    const dir = socketDir(defer, "bsk-");
    const script = byteSinkScript(
      dir.path("limited.ts"),
      `const sink = ByteSink.open(process.argv[2]);
const unit = (n) => new Uint8Array(n).fill(1);
const seen = [];
// 3000 bytes written whole first: the failure's count starts from the buffer's own units, not these.
for (let i = 0; i < 3; i++) sink.write(unit(1000), 1);
sink.flush();
seen.push({ ...sink.dropped });
// Then 2 frames of 548 (the second ends exactly at the 4096-byte limit) and a unit without a frame, cut.
sink.write(unit(548), 1);
sink.write(unit(548), 1);
sink.write(unit(100), 0);
try { sink.flush(); } catch (e) { seen.push(e.message); }
// Then 3 frames past the limit, in a fresh buffer after the failure: counted, not written.
for (let i = 0; i < 3; i++) sink.write(unit(512), 1);
seen.push({ ...sink.dropped }, sink.bytesWritten);
console.log(JSON.stringify(seen));`,
    );
    const out = dir.path("limited.out");
    const run = withFileSizeLimit(4096, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual([
      { sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 },
      `cannot write to sink ${out}: EFBIG`,
      { sink_no_reader: 0, sink_write_failed: 3, sink_reader_slow: 0 },
      4096,
    ]);
    expect(statSync(out).size).toBe(4096);
  });

  test("written in the thread pool (offLoop, as the roles write a file): the same bytes and counts; a buffer past its size while a write is under way has the caller wait (`waiting`), and a write stopped part-way is told to `offLoop` as found and raised by close, the frames after it counted", () => {
    const dir = socketDir(defer, "bsk-");
    const script = byteSinkScript(
      dir.path("off-loop.ts"),
      `const told = [];
const sink = ByteSink.open(process.argv[2], { offLoop: (e) => told.push(e.message), capacity: 1024 });
const unit = (n) => new Uint8Array(n).fill(1);
const seen = [];
// The second unit finds the buffer full: the first goes to the thread pool, and the caller is told to wait for it.
for (let i = 0; i < 3; i++) sink.write(unit(1000), 1);
const waiting = sink.waiting;
seen.push(waiting !== undefined);
await waiting;
// Then 2 frames of 548 (the second ends exactly at the 4096-byte limit) and a unit without a frame, cut.
sink.write(unit(548), 1);
sink.write(unit(548), 1);
sink.write(unit(100), 0);
sink.flush();
try { await sink.close(); } catch (e) { seen.push(e.message); }
seen.push({ ...sink.dropped }, sink.bytesWritten);
for (let i = 0; i < 3; i++) sink.write(unit(512), 1);
seen.push({ ...sink.dropped }, told);
console.log(JSON.stringify(seen));`,
    );
    const out = dir.path("off-loop.out");
    const run = withFileSizeLimit(4096, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual([
      true,
      `cannot write to sink ${out}: EFBIG`,
      { sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 },
      4096,
      { sink_no_reader: 0, sink_write_failed: 3, sink_reader_slow: 0 },
      // Told as it is found, once: a run whose sink nothing calls on again still ends.
      [`cannot write to sink ${out}: EFBIG`],
    ]);
    expect(statSync(out).size).toBe(4096);
  });

  test("written in the thread pool, fed as fast as it lets its caller (a flood): what it holds unwritten stays within its buffer's size and what one read brings, however much goes through", () => {
    const dir = socketDir(defer, "bsk-");
    const script = byteSinkScript(
      dir.path("off-loop-flood.ts"),
      `const sink = ByteSink.open(process.argv[2], { offLoop: () => {}, capacity: 64 * 1024 });
const unit = new Uint8Array(1000).fill(1);
let given = 0;
let most = 0;
// A reader of the socket: each read brings 100 units, and it reads on unless told to wait.
for (let read = 0; read < 200; read++) {
  for (let i = 0; i < 100; i++) sink.write(unit, 1);
  given += 100 * unit.length;
  most = Math.max(most, given - sink.bytesWritten);
  if (sink.waiting) await sink.waiting;
}
await sink.close();
console.log(JSON.stringify({ most, written: sink.bytesWritten }));`,
    );
    const out = dir.path("off-loop-flood.out");
    const run = Bun.spawnSync([process.execPath, script, out], { stderr: "pipe" });
    expect(run.stderr.toString()).toBe("");
    const { most, written } = JSON.parse(run.stdout.toString());
    expect(written).toBe(20_000_000);
    expect(statSync(out).size).toBe(20_000_000);
    expect(most).toBeLessThanOrEqual(64 * 1024 + 100 * 1000);
  });

  test("written in the thread pool: a flush asked for while a write is under way follows it, and close settles with what that next write did (cut short, then stopped: the unit taken back off, its frame counted, the failure raised)", () => {
    const dir = socketDir(defer, "bsk-");
    const script = byteSinkScript(
      dir.path("off-loop-next.ts"),
      `const told = [];
const sink = ByteSink.open(process.argv[2], { offLoop: (e) => told.push(e.message), capacity: 1024 });
const unit = (n) => new Uint8Array(n).fill(1);
const seen = [];
sink.write(unit(1000), 1);
sink.flush();
// Buffered while the first write is under way, and flushed by the close: written once that write ends, 3096 bytes of it under the 4096-byte limit.
sink.write(unit(3500), 1);
try { await sink.close(); seen.push("closed"); } catch (e) { seen.push(e.message); }
seen.push({ ...sink.dropped }, sink.bytesWritten, told);
console.log(JSON.stringify(seen));`,
    );
    const out = dir.path("off-loop-next.out");
    const run = withFileSizeLimit(4096, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual([
      `cannot write to sink ${out}: EFBIG`,
      { sink_no_reader: 0, sink_write_failed: 1, sink_reader_slow: 0 },
      4096,
      [`cannot write to sink ${out}: EFBIG`],
    ]);
    // The unit cut short is taken back off: the file ends with the last one written whole.
    expect(statSync(out).size).toBe(1000);
  });

  test("a failed write takes off the `opening` units before the unit it cut (a stream's header pages with no audio after them), those an earlier flush wrote whole too: the file ends with its last unit that is not one", () => {
    const dir = socketDir(defer, "bsk-");
    const script = byteSinkScript(
      dir.path("opening.ts"),
      `const sink = ByteSink.open(process.argv[2]);
const unit = (n) => new Uint8Array(n).fill(1);
sink.write(unit(1000), 1);
sink.flush();
sink.write(unit(100), 0, "begins", true);
sink.write(unit(100), 0, "completes", true);
sink.flush();
// Past the 4096-byte limit: cut short.
sink.write(unit(3000), 1);
try { sink.flush(); } catch (e) { console.log(e.message); }`,
    );
    const out = dir.path("opening.out");
    const run = withFileSizeLimit(4096, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(run.stdout.toString()).toBe(`cannot write to sink ${out}: EFBIG\n`);
    expect(statSync(out).size).toBe(1000);
  });

  test("an Ogg stream appended to a file that fails before its audio passes its pre-skip (none of it played yet): its audio pages go with its headers, their frames counted as dropped, and the file is the recording before it", () => {
    const dir = socketDir(defer, "bsk-");
    const src = `${import.meta.dir}/../../src`;
    // --pre-skip 3840, a page per 20 ms packet, each flushed: the first four audio pages end within the pre-skip.
    const script = byteSinkScript(
      dir.path("pre-skip.ts"),
      `import { OggSink } from ${JSON.stringify(`${src}/media/ogg-sink.ts`)};
import { encodeMessage, FrameParser, MessageType, OUTPUT_MAGIC } from ${JSON.stringify(`${src}/protocol/index.ts`)};
const sink = OggSink.over(ByteSink.open(process.argv[2], { append: true }), { preSkip: 3840, pageMs: 20 });
const parser = new FrameParser(OUTPUT_MAGIC);
const failures = new Set();
for (let i = 0; i < 8; i++) {
  parser.push(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, Uint8Array.of(0xfc, 0xff, 0xfe)));
  sink.write(parser.next());
  try { sink.flush(); } catch (e) { failures.add(e.message); }
}
try { await sink.close(); } catch (e) { failures.add(e.message); }
console.log([...failures].join(" | "), sink.dropped.sink_write_failed);`,
    );
    // Where its pages begin when written whole: OpusHead, OpusTags, then one audio page after another.
    const whole = dir.path("whole.opus");
    expect(Bun.spawnSync([process.execPath, script, whole]).stdout.toString()).toBe(" 0\n");
    const pages = pagesOf(new Uint8Array(readFileSync(whole)));
    expect(pages.slice(2, 7).map((p) => p.granule)).toEqual([960, 1920, 2880, 3840, 4800]);
    const before = new Uint8Array(readFileSync(TONE));
    const out = dir.path("pre-skip.opus");
    writeFileSync(out, before);
    // Room for the headers, two audio pages and part of the third.
    const limit = before.length + pages[4]!.offset + 10;
    const run = withFileSizeLimit(limit, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(run.stdout.toString()).toBe(`cannot write to sink ${out}: EFBIG 8\n`);
    expect(sameBytes(new Uint8Array(readFileSync(out)), before)).toBe(true);
  });

  test("an Ogg recording appended to whose stream's ending cannot be written (its last page past a file size limit): the file is left unmarked, and the write after it fails as any past the limit does", () => {
    const dir = socketDir(defer, "bsk-");
    const src = `${import.meta.dir}/../../src`;
    const script = byteSinkScript(
      dir.path("ending.ts"),
      `import { openSink } from ${JSON.stringify(`${src}/media/open.ts`)};
import { encodeMessage, FrameParser, MessageType, OUTPUT_MAGIC } from ${JSON.stringify(`${src}/protocol/index.ts`)};
const seen = [];
try {
  const sink = openSink("ogg", process.argv[2], { append: true, preSkip: 312, pageMs: 20 });
  seen.push("opened");
  const parser = new FrameParser(OUTPUT_MAGIC);
  parser.push(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, Uint8Array.of(0xfc, 0xff, 0xfe)));
  sink.write(parser.next());
  try { sink.flush(); } catch (e) { seen.push(e.message); }
} catch (e) {
  seen.push(e.message);
}
console.log(JSON.stringify(seen));`,
    );
    const tone = new Uint8Array(readFileSync(TONE));
    const pages = pagesOf(tone);
    // Without its end-of-stream page: the page before is the one marked, where the limit forbids a write.
    const unended = tone.subarray(0, pages.at(-1)!.offset);
    const out = dir.path("unended.opus");
    writeFileSync(out, unended);
    const run = withFileSizeLimit(pages.at(-2)!.offset, script, out);
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual(["opened", `cannot write to sink ${out}: EFBIG`]);
    expect(sameBytes(new Uint8Array(readFileSync(out)), unended)).toBe(true);
  });

  test("an Ogg stream over an output that fails counts every packet it was given, the one being added as the page before it failed too", () => {
    for (const capacity of [64, 100, 4096]) {
      const sink = OggSink.over(ByteSink.open("/dev/full", { capacity }));
      let given = 0;
      let failed = 0;
      for (let i = 0; i < 1000; i++) {
        try {
          given++;
          sink.write(opusMessage(Uint8Array.of(0xfc, i & 0xff, 2, 3, 4, 5, 6, 7)));
        } catch {
          failed++;
        }
      }
      expect(() => sink.close()).toThrow("ENOSPC");
      expect(failed).toBeGreaterThan(0);
      expect({ capacity, dropped: sink.dropped.sink_write_failed }).toEqual({ capacity, dropped: given });
    }
  });

  test("a write that fills the buffer and fails counts the frames held and its own", () => {
    const sink = ByteSink.open("/dev/full", { capacity: 64 });
    sink.write(unit(30), 1);
    sink.write(unit(30), 1);
    expect(() => sink.write(unit(30), 4)).toThrow("ENOSPC");
    expect(sink.dropped.sink_write_failed).toBe(6);
  });

  test("a unit larger than the buffer, written straight, is counted when its write fails", () => {
    const sink = ByteSink.open("/dev/full", { capacity: 64 });
    expect(() => sink.write(unit(100), 3)).toThrow("ENOSPC");
    expect(sink.dropped.sink_write_failed).toBe(3);
  });

  test("a reader gone (EPIPE) counts the frames under sink_no_reader", () => {
    const path = makeFifo(socketDir(defer, "bsk-").path("gone.fifo"));
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const fd = openSync(path, constants.O_WRONLY);
    closeSync(reader);
    const sink = ByteSink.adopt(path, fd);
    for (let i = 0; i < 4; i++) sink.write(unit(50), 1);
    expect(() => sink.flush()).toThrow(`cannot write to sink ${path}: EPIPE`);
    expect(sink.dropped).toEqual({ sink_no_reader: 4, sink_write_failed: 0, sink_reader_slow: 0 });
    expect(() => sink.close()).toThrow("EPIPE");
    expect(openFiles(process.pid)).not.toContain(path);
  });

  test("a TCP reader that reset the connection (ECONNRESET) counts as the reader gone: sink_no_reader", () => {
    const dir = socketDir(defer, "bsk-");
    // On stdout, a TCP socket: one unit goes out and is flushed, then (told on stdin) four more.
    const script = byteSinkScript(
      dir.path("reset.ts"),
      `const sink = ByteSink.open("-");
sink.write(new Uint8Array(100), 1);
sink.flush();
console.error("flushed");
for await (const _ of console) break;
for (let i = 0; i < 4; i++) sink.write(new Uint8Array(100), 1);
let error = "";
try { sink.flush(); } catch (e) { error = e.message; }
console.error(JSON.stringify({ error, dropped: sink.dropped }));`,
    );
    // The reader closes with the first unit unread, so its kernel resets the connection (RST).
    const harness = `
import socket, subprocess, sys, time
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
reader, _ = server.accept()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=client.fileno(), stderr=subprocess.PIPE, text=True)
client.close()
assert child.stderr.readline() == "flushed\\n"
time.sleep(0.2)
reader.close()
time.sleep(0.2)
child.stdin.write("go\\n"); child.stdin.flush()
print(child.stderr.read(), end="")
sys.exit(child.wait())`;
    const run = Bun.spawnSync(["python3", "-c", harness, process.execPath, script], { stderr: "pipe", timeout: 30_000 });
    expect(run.stderr.toString()).toBe("");
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout.toString())).toEqual({ error: "cannot write to sink stdout: ECONNRESET", dropped: { sink_no_reader: 4, sink_write_failed: 0, sink_reader_slow: 0 } });
  });

  test("frames written whole before the reader left are not counted; the ones after are", async () => {
    const path = makeFifo(socketDir(defer, "bsk-").path("half.fifo"));
    // A reader that takes 100000 bytes and leaves: what is in the pipe then is lost with it.
    const reader = Bun.spawn(["sh", "-c", 'head -c 100000 "$0" > /dev/null', path]);
    defer(() => reader.kill("SIGKILL"));
    const sink = ByteSink.adopt(path, openSync(path, constants.O_WRONLY), 300_000);
    for (let i = 0; i < 300; i++) sink.write(unit(1000), 1);
    expect(() => sink.flush()).toThrow("EPIPE");
    expect(await reader.exited).toBe(0);
    // The reader had 100000 bytes, and the pipe held at most 64 KiB more when it left.
    expect(sink.bytesWritten).toBeGreaterThanOrEqual(100_000);
    expect(sink.bytesWritten).toBeLessThan(100_000 + 65_536 + 1000);
    expect(sink.dropped.sink_no_reader).toBe(300 - Math.floor(sink.bytesWritten / 1000));
    expect(() => sink.close()).toThrow("EPIPE");
  });
});

describe("ByteSink over a pipe whose reader is behind", () => {
  /** A FIFO with a reader's end (non-blocking, read by the test) and a sink over its non-blocking writer's end. */
  function pipeSink(name: string): { sink: ByteSink; reader: number; leave: () => void; path: string } {
    const path = makeFifo(socketDir(defer, "bsk-").path(name));
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    let open = true;
    const leave = () => {
      if (open) closeSync(reader);
      open = false;
    };
    defer(leave);
    return { sink: ByteSink.adopt(path, openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)), reader, leave, path };
  }

  /** Unit `i`: 1000 bytes of i's low byte, so that order shows in what is read. */
  const numbered = (i: number) => new Uint8Array(1000).fill(i & 0xff);

  /** Reads what the pipe holds now (until EAGAIN), appended to `into`. */
  function readNow(fd: number, into: number[]): void {
    for (const byte of readAvailable(fd)) into.push(byte);
  }

  test("what the full pipe does not take waits in the sink, which says so (waiting); read, it all arrives once and in order, and waiting settles", async () => {
    const { sink, reader } = pipeSink("behind.fifo");
    expect(sink.waiting).toBeUndefined();
    // 200 000 bytes, and the pipe holds 64 KiB: the rest waits, and what comes meanwhile waits behind it.
    for (let i = 0; i < 200; i++) sink.write(numbered(i), 1);
    sink.flush();
    const waiting = sink.waiting;
    expect(waiting).toBeInstanceOf(Promise);
    for (let i = 200; i < 300; i++) sink.write(numbered(i), 1);
    const read: number[] = [];
    let settled = false;
    void waiting!.then(() => (settled = true));
    while (!settled) {
      readNow(reader, read);
      await Bun.sleep(5);
    }
    expect(sink.waiting).toBeUndefined();
    sink.flush();
    await sink.close();
    readNow(reader, read);
    expect(read.length).toBe(300_000);
    for (let i = 0; i < 300; i++) expect(read[i * 1000]).toBe(i & 0xff);
    expect(sink.bytesWritten).toBe(300_000);
    expect(sink.dropped).toEqual({ sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 });
  });

  // Room for units is kept at one per SMALLEST_UNIT bytes; units smaller than that (one byte
  // each here) outnumber it, so the larger buffer a backlog grows into must count them, not its size.
  test("units smaller than a wire message, held while the reader is behind: the buffer grows past them, and they all arrive once and in order", async () => {
    const { sink, reader } = pipeSink("small.fifo");
    // 64 KiB in the pipe, 64 KiB in the buffer, then the backlog past it.
    const units = 200_000;
    for (let i = 0; i < units; i++) sink.write(Uint8Array.of(i & 0xff), 1);
    expect(sink.waiting).toBeInstanceOf(Promise);
    const read: number[] = [];
    let closed = false;
    const closing = Promise.resolve(sink.close()).then(() => (closed = true));
    while (!closed) {
      readNow(reader, read);
      await Bun.sleep(5);
    }
    await closing;
    readNow(reader, read);
    expect(read.length).toBe(units);
    expect(read.every((b, i) => b === (i & 0xff))).toBe(true);
    expect(sink.dropped).toEqual({ sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 });
  });

  /** How many of this process's descriptors are open on `path`: the test's reader, and the sink's writer until it is closed. */
  const openOn = (path: string) => openFiles(process.pid).filter((file) => file === path).length;

  test("closed while its reader reads nothing: close settles after LINGER_MS, the units not wholly in the pipe counted sink_reader_slow, its descriptor is closed, and what waited on it goes on", async () => {
    const { sink, reader, path } = pipeSink("stalled.fifo");
    for (let i = 0; i < 100; i++) sink.write(numbered(i), 2);
    expect(openOn(path)).toBe(2);
    // The pipe full, the rest waits: a reading of the socket paused until the sink has room (the client's) is let go by the close.
    sink.flush();
    let settled = false;
    void sink.waiting!.then(() => (settled = true));
    const closing = sink.close();
    expect(closing).toBeInstanceOf(Promise);
    await closing;
    expect(openOn(path)).toBe(1);
    expect({ settled, waiting: sink.waiting }).toEqual({ settled: true, waiting: undefined });
    const read: number[] = [];
    readNow(reader, read);
    // The pipe took 65 units whole and 536 bytes of the 66th: the 35 after them (2 frames each) were the reader's to miss.
    const whole = Math.floor(read.length / 1000);
    expect(read.length).toBe(sink.bytesWritten);
    expect(sink.dropped).toEqual({ sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 2 * (100 - whole) });
    expect(whole).toBeLessThan(100);
  });

  test("closed while its reader reads slowly: close waits as long as it keeps reading (here about 2 s, past LINGER_MS), nothing is dropped, and its descriptor is closed", async () => {
    const { sink, reader, path } = pipeSink("slow.fifo");
    // 300 000 bytes, taken 16 KiB every 150 ms: some 2 s of reading, each read well within LINGER_MS of the last.
    for (let i = 0; i < 300; i++) sink.write(numbered(i), 1);
    let closed = false;
    const closing = Promise.resolve(sink.close()).then(() => (closed = true));
    const read: number[] = [];
    const chunk = new Uint8Array(16384);
    while (!closed) {
      await Bun.sleep(150);
      try {
        const got = readSync(reader, chunk);
        read.push(...chunk.subarray(0, got));
      } catch {
        // EAGAIN: nothing there this time
      }
    }
    await closing;
    expect(openOn(path)).toBe(1);
    readNow(reader, read);
    expect(read.length).toBe(300_000);
    for (let i = 0; i < 300; i++) expect(read[i * 1000]).toBe(i & 0xff);
    expect(sink.dropped).toEqual({ sink_no_reader: 0, sink_write_failed: 0, sink_reader_slow: 0 });
  });

  test("a reader that leaves while the sink waits on it: waiting rejects with EPIPE, the frames not written whole counted sink_no_reader, and flush and close raise it", async () => {
    const { sink, leave } = pipeSink("left.fifo");
    for (let i = 0; i < 100; i++) sink.write(numbered(i), 1);
    sink.flush();
    const waiting = sink.waiting!;
    leave();
    expect(await waiting.then(() => "settled", (e: Error) => e.message)).toBe(`cannot write to sink ${sink.name}: EPIPE`);
    const whole = Math.floor(sink.bytesWritten / 1000);
    expect(sink.dropped).toEqual({ sink_no_reader: 100 - whole, sink_write_failed: 0, sink_reader_slow: 0 });
    sink.write(numbered(100), 1);
    expect(sink.dropped.sink_no_reader).toBe(101 - whole);
    expect(() => sink.flush()).toThrow("EPIPE");
    expect(() => sink.close()).toThrow("EPIPE");
  });
});

describe("a wire capture appended to", () => {
  /** Opens `bytes` as a file for appending through openSink, writes one more frame, and returns what the file then holds. */
  function appended(bytes: Uint8Array): Uint8Array {
    const path = socketDir(defer, "wsk-").path("rec.wire");
    writeFileSync(path, bytes);
    const sink = openSink("wire", path, { append: true, preSkip: 312, pageMs: 100 });
    sink.write(opusMessage(new Uint8Array([7, 7, 7])));
    void sink.close();
    return new Uint8Array(readFileSync(path));
  }
  const next = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([7, 7, 7]));

  test("is cut back to its last whole message first, wherever the last one was cut (in its header, in its payload)", () => {
    const whole = indexedWire(0, 5, 300);
    expect(indexedWire(5, 6, 300).length).toBeGreaterThan(200);
    for (const cut of [1, 9, 16, 17, 200]) {
      const torn = concatBytes([whole, indexedWire(5, 6, 300).subarray(0, cut)]);
      expect({ cut, bytes: appended(torn) }).toEqual({ cut, bytes: concatBytes([whole, next]) });
    }
    // Cut inside its first magic, of either channel: nothing of it was whole.
    for (const cut of [1, 3]) {
      expect({ cut, bytes: appended(indexedWire(0, 1, 300).subarray(0, cut)) }).toEqual({ cut, bytes: next });
      expect({ cut, bytes: appended(indexedWire(0, 1, 300, INPUT_MAGIC).subarray(0, cut)) }).toEqual({ cut, bytes: next });
    }
    // A whole capture is only added to; so is an input channel's.
    expect(appended(whole)).toEqual(concatBytes([whole, next]));
    const input = indexedWire(0, 3, 100, INPUT_MAGIC);
    expect(appended(input)).toEqual(concatBytes([input, next]));
  });

  test("bytes of another format are refused (FileFormatError, the file left as it is); a capture with damage within is left as it is and added to", () => {
    const ogg = new TextEncoder().encode("OggS\0\x02 not a capture at all");
    const path = socketDir(defer, "wsk-").path("rec.wire");
    writeFileSync(path, ogg);
    expect(() => openSink("wire", path, { append: true, preSkip: 312, pageMs: 100 })).toThrow(FileFormatError);
    expect(new Uint8Array(readFileSync(path))).toEqual(ogg);
    const damaged = concatBytes([indexedWire(0, 2, 300), new TextEncoder().encode("garbage in the middle"), indexedWire(2, 4, 300).subarray(0, 50)]);
    expect(appended(damaged)).toEqual(concatBytes([damaged, next]));
  });

  // The format is looked at only to add to a file: without --append the file is truncated, as `>` truncates it.
  test("without --append, a file of another format or the other channel's capture is not refused: it is replaced by the new capture", () => {
    const path = socketDir(defer, "wsk-").path("rec.wire");
    for (const [what, before] of [
      ["ogg", new TextEncoder().encode("OggS\0\x02 not a capture at all")],
      ["input capture", indexedWire(0, 3, 100, INPUT_MAGIC)],
    ] as const) {
      writeFileSync(path, before);
      const sink = openSink("wire", path, { append: false, channel: "output", preSkip: 312, pageMs: 100 });
      sink.write(opusMessage(new Uint8Array([7, 7, 7])));
      void sink.close();
      expect({ what, bytes: new Uint8Array(readFileSync(path)) }).toEqual({ what, bytes: next });
    }
  });

  test("zero bytes to the end (a power loss that kept the file's length, not its last blocks) are cut as a tail cut short: after whole messages, half a message, or alone", () => {
    const whole = indexedWire(0, 5, 300);
    const half = indexedWire(5, 6, 300).subarray(0, 9);
    for (const zeros of [1, 16, 17, 4096]) {
      expect({ zeros, bytes: appended(concatBytes([whole, new Uint8Array(zeros)])) }).toEqual({ zeros, bytes: concatBytes([whole, next]) });
      expect({ zeros, bytes: appended(concatBytes([whole, half, new Uint8Array(zeros)])) }).toEqual({ zeros, bytes: concatBytes([whole, next]) });
    }
    expect(appended(new Uint8Array(4096))).toEqual(next);
    // A whole capture whose last payload ends in zero bytes is whole: nothing of it is cut.
    const zeroEnded = concatBytes([whole, encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, Uint8Array.of(0xfc, 0, 0, 0, 0))]);
    expect(appended(zeroEnded)).toEqual(concatBytes([zeroEnded, next]));
    // Zeros with bytes after them are damage within: left as they are.
    const within = concatBytes([whole, new Uint8Array(64), indexedWire(5, 6, 300)]);
    expect(appended(within)).toEqual(concatBytes([within, next]));
  });

  test("a capture of several MiB ending in zero bytes of any length, across the chunks the look reads (64 KiB back from the end, 1 MiB from the start), keeps every whole message", () => {
    // Messages of up to 4096 bytes, so that chunks end inside them.
    const whole = indexedWire(0, 1600, 4096);
    expect(whole.length).toBeGreaterThan(3 << 20);
    const half = indexedWire(1600, 1601, 4096).subarray(0, 100);
    for (const zeros of [65535, 65536, 65537, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]) {
      for (const tail of [new Uint8Array(0), half]) {
        const kept = appended(concatBytes([whole, tail, new Uint8Array(zeros)]));
        expect({ zeros, tail: tail.length, length: kept.length }).toEqual({ zeros, tail: tail.length, length: whole.length + next.length });
        expect(sameBytes(kept, concatBytes([whole, next]))).toBe(true);
      }
    }
  });

  test("a capture longer than the tail looked at (its last TAIL_BYTES) is read from the first header found there that leads to its end: damage before it is not read, its tail is cut as a short one's; headers found inside a payload are passed over; damage inside the tail leaves it as it is", () => {
    const message = (fill: number, size = 4096) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array(size).fill(fill));
    const damage = new TextEncoder().encode("garbage in the middle");
    const before = concatBytes([message(1, 300), damage, message(2, 300)]);
    // Whole messages of 4113 bytes, as many as the tail holds: it begins inside the message before them.
    const suffix = concatBytes(Array.from({ length: Math.floor(TAIL_BYTES / 4113) }, () => message(0x33)));
    const half = message(0x44).subarray(0, 100);
    // The tail looked at begins inside the payload of `bearer`, where bytes that read as headers lie after it.
    const bearerAt = before.length;
    const total = bearerAt + message(0, 4080).length + suffix.length + half.length;
    const tailFrom = total - TAIL_BYTES;
    const payloadAt = bearerAt + 17;
    expect(tailFrom).toBeGreaterThan(payloadAt);
    const payload = new Uint8Array(4080).fill(0x55);
    const fakes = [10, 500, 1500].map((after) => tailFrom - payloadAt + after);
    for (const at of fakes) payload.set(wireHeader(OUTPUT_MAGIC, MessageType.OpusFrame, 4000), at);
    const bearer = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payload);
    const whole = concatBytes([before, bearer, suffix]);
    const bytes = concatBytes([whole, half]);
    expect(bytes.length).toBe(total);
    // Each header found in the payload leads to bytes that are not one.
    for (const at of fakes) {
      const parser = new FrameParser(OUTPUT_MAGIC);
      parser.push(bytes.subarray(payloadAt + at));
      expect(() => {
        while (parser.next());
      }).toThrow();
    }
    expect(sameBytes(appended(bytes), concatBytes([whole, next]))).toBe(true);
    // Damage inside the tail: nothing there leads to the end, so it is read from its start, as a short one is.
    const damagedTail = concatBytes([before, bearer, suffix.subarray(0, 4113 * 30), damage, suffix.subarray(4113 * 30), half]);
    expect(sameBytes(appended(damagedTail), concatBytes([damagedTail, next]))).toBe(true);
  });

  test("a capture longer than the tail looked at whose payloads each begin with bytes that read as a header of their length (a capture carried as payload) is cut where its messages end, not where the headers inside their payloads lead", () => {
    // Each header found in a payload leads to the one in the next payload, 17 bytes past its message's start, and to the end.
    const carrying = (size: number) =>
      encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, concatBytes([wireHeader(OUTPUT_MAGIC, MessageType.OpusFrame, 4000), new Uint8Array(size - 17).fill(0x33)]));
    const whole = concatBytes([...Array.from({ length: 80 }, () => carrying(4000)), carrying(1027)]);
    // The tail looked at begins 5 bytes into a message: the first header found there is the one in its payload.
    expect((whole.length - TAIL_BYTES) % 4017).toBe(5);
    expect(sameBytes(appended(whole), concatBytes([whole, next]))).toBe(true);
    const torn = concatBytes([whole, carrying(4000).subarray(0, 3000)]);
    expect(sameBytes(appended(torn), concatBytes([whole, next]))).toBe(true);
  });

  test("a capture longer than the tail looked at, ending in zero bytes (a power loss that kept its length), is not read from its start: its tail is looked at again where the zeros begin, as a whole one's is", async () => {
    const whole = indexedWire(0, 4000, 4000);
    expect(whole.length).toBeGreaterThan(16 * TAIL_BYTES);
    const half = indexedWire(4000, 4001, 4000).subarray(0, 1000);
    for (const tail of [new Uint8Array(4096), concatBytes([half, new Uint8Array(4096)]), new Uint8Array(TAIL_BYTES + 4096)]) {
      const path = socketDir(defer, "wsk-").path("rec.wire");
      writeFileSync(path, concatBytes([whole, tail]));
      const before = bytesReadHere();
      const sink = openSink("wire", path, { append: true, preSkip: 312, pageMs: 100 });
      const read = bytesReadHere() - before;
      sink.write(opusMessage(new Uint8Array([7, 7, 7])));
      await sink.close();
      expect({ tail: tail.length, readWhole: read >= whole.length / 2 }).toEqual({ tail: tail.length, readWhole: false });
      expect(sameBytes(new Uint8Array(readFileSync(path)), concatBytes([whole, next]))).toBe(true);
    }
  });

  /** Makes the file at `path` append-only (chattr +a: ftruncate refuses it, EPERM), undone at the test's end; false where that cannot be done. */
  function appendOnly(path: string): boolean {
    if (Bun.spawnSync(["chattr", "+a", path], { stderr: "ignore" }).exitCode !== 0) return false;
    defer(() => Bun.spawnSync(["chattr", "-a", path]));
    return true;
  }
  const canAppendOnly = (() => {
    const path = socketDir(defer, "wsk-").path("probe");
    writeFileSync(path, "");
    return appendOnly(path);
  })();

  test.skipIf(!canAppendOnly)("an append-only file (chattr +a) whole to its end is added to, never cut; one ending in a message cut short is refused naming it, which ftruncate cannot cut, and left as it is with no descriptor open on it", () => {
    const whole = indexedWire(0, 5, 300);
    const path = socketDir(defer, "wsk-").path("rec.wire");
    writeFileSync(path, whole);
    expect(appendOnly(path)).toBe(true);
    const sink = openSink("wire", path, { append: true, preSkip: 312, pageMs: 100 });
    sink.write(opusMessage(new Uint8Array([7, 7, 7])));
    void sink.close();
    expect(new Uint8Array(readFileSync(path))).toEqual(concatBytes([whole, next]));
    const torn = concatBytes([whole, indexedWire(5, 6, 300).subarray(0, 9)]);
    const cut = socketDir(defer, "wsk-").path("cut.wire");
    writeFileSync(cut, torn);
    expect(appendOnly(cut)).toBe(true);
    let refusal: unknown;
    try {
      openSink("wire", cut, { append: true, preSkip: 312, pageMs: 100 });
    } catch (e) {
      refusal = e;
    }
    expect(refusal).toBeInstanceOf(FileFormatError);
    expect((refusal as FileFormatError).naming("--format")).toBe(
      `sink ${cut}: its last 9 bytes are no whole message or page, and --append cannot cut them off (EPERM: the file is append-only, chattr +a): what it adds would follow them, where a reader stops; use another file`,
    );
    expect(new Uint8Array(readFileSync(cut))).toEqual(torn);
    expect(openFiles(process.pid)).not.toContain(cut);
  });

  test("a tail shorter than a header that does not begin a message of the capture's channel (the other channel's magic, text) is left as it is, as a longer one is", () => {
    const whole = indexedWire(0, 5, 300);
    const input = indexedWire(0, 1, 300, INPUT_MAGIC);
    for (const tail of [input.subarray(0, 10), input, new TextEncoder().encode("not a message\n")]) {
      const bytes = concatBytes([whole, tail]);
      expect({ tail: tail.length, bytes: appended(bytes) }).toEqual({ tail: tail.length, bytes: concatBytes([bytes, next]) });
    }
  });
});
