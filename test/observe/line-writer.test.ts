/**
 * LineWriter over a real FIFO whose reader the test holds and reads only
 * when it chooses: a log reader that stalls and comes back.
 */
import { describe, expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { closeSync, constants, existsSync, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { appendedFile } from "../../src/io/appended-file.ts";
import { LineWriter } from "../../src/observe/line-writer.ts";
import { setPipeSize } from "../../src/transport/socket-options.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo, readAvailableText } from "../support/fifo.ts";
import { canFreezeDisk, canSlowWrites, canUnshare, dropCached, freezableDisk, slowReads, smallDisk, withFileSizeLimit } from "../support/machine.ts";
import { wakeUps } from "../support/proc.ts";
import { BUN, cleanEnv, run, start } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();
const PIPE_BYTES = 4096;
/** Whether this machine can freeze a disk for a test (freezableDisk). */
const freezable = await canFreezeDisk();

/**
 * A FIFO of PIPE_BYTES: a non-blocking writer's end, and its reader's (held,
 * read only by readAll), which can leave (a `logger` that died: writes then
 * fail, EPIPE) and be followed by another (one started again), who finds
 * what the pipe held.
 */
function stalledPipe(): { path: string; writer: number; readAll: () => string; readerLeaves: () => void; readerComes: () => void } {
  const t = socketDir(defer, "aa-lw-");
  const fifo = makeFifo(t.path("log"));
  const open = () => openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let reader: number | undefined = open();
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  defer(() => (closeSync(writer), reader !== undefined && closeSync(reader)));
  expect(setPipeSize(writer, PIPE_BYTES)).toMatchObject({ ok: true, bytes: PIPE_BYTES });
  const readAll = () => readAvailableText(reader!);
  const readerLeaves = () => (closeSync(reader!), (reader = undefined));
  const readerComes = () => void (reader = open());
  return { path: fifo, writer, readAll, readerLeaves, readerComes };
}

const line = (i: number, bytes = 100) => `line ${String(i).padStart(4, "0")} ${"x".repeat(bytes - 11)}\n`;

/**
 * The pipe's reader leaves (EPIPE) once `out` has offered it what waits; a
 * new one comes and `next` is written: what the new reader reads, up to it.
 */
async function readAfterReaderReturns(out: LineWriter, pipe: ReturnType<typeof stalledPipe>, next: string): Promise<string> {
  pipe.readerLeaves();
  await until(() => out.backlog.bytes === 0, "what waits offered to no reader", 5000);
  pipe.readerComes();
  out.write(next);
  let read = "";
  await until(() => ((read += pipe.readAll()), read.endsWith(next)), "the next line", 5000);
  return read;
}

/**
 * A script at `path` for a LineWriter run as a process of its own (under a
 * file size limit, in a small disk's mount namespace, or exiting at once):
 * `out` appends to the file its first argument names (or writes to the pipe
 * it names without blocking, with `pipe`; in the thread pool, with
 * `offLoop`), then `body` runs.
 */
function lineWriterScript(path: string, body: string, pipe = false, offLoop = false): string {
  const flags = pipe ? "fs.constants.O_WRONLY | fs.constants.O_NONBLOCK" : "fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND";
  writeFileSync(
    path,
    `import * as fs from "node:fs";
import { LineWriter } from ${JSON.stringify(`${import.meta.dir}/../../src/observe/line-writer.ts`)};
const out = new LineWriter(fs.openSync(process.argv[2], ${flags}, 0o644), undefined, ${offLoop});
${body}`,
  );
  return path;
}

test("lines the pipe cannot take wait, in order, and follow once the reader reads; writing never waits", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer);
  const lines = Array.from({ length: 100 }, (_, i) => line(i));
  for (const text of lines) out.write(text);
  // The pipe holds 40 whole lines; the other 60 wait.
  expect(out.backlog).toEqual({ bytes: 6000, lost: 0 });
  let read = readAll();
  expect(read).toBe(lines.slice(0, 40).join(""));
  await until(() => ((read += readAll()), out.backlog.bytes === 0 && read.length === 10_000), "the backlog to reach the reader", 5000);
  expect(read).toBe(lines.join(""));
});

test("past its bound a line is counted and lost, and once the reader is back a notice says how many", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer, 1000);
  const lines = Array.from({ length: 100 }, (_, i) => line(i));
  for (const text of lines) out.write(text);
  expect(out.backlog).toEqual({ bytes: 1000, lost: 50 });
  let read = readAll();
  const notice = "audio-agent: 50 log lines lost: the log's reader was not reading\n";
  await until(() => ((read += readAll()), read.endsWith(notice)), "the notice", 5000);
  expect(read).toBe(lines.slice(0, 50).join("") + notice);
  expect(out.backlog).toEqual({ bytes: 0, lost: 0 });
  // Told once: what comes next is written as usual.
  out.write(line(100));
  expect(readAll()).toBe(line(100));
});

test("the notice of lost lines comes where they were lost: before a line written once the backlog had room again", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer, 8000);
  defer(() => out.drain(0));
  // 40 lines in the pipe, 80 waiting, 10 lost.
  for (let i = 0; i < 130; i++) out.write(line(i));
  expect(out.backlog).toEqual({ bytes: 8000, lost: 10 });
  // The reader empties the pipe once: a retry moves 40 waiting lines into it; 40 and the notice still wait.
  let read = readAll();
  await until(() => out.backlog.bytes === 4000, "a retry to move 40 lines", 5000);
  out.write(line(130));
  expect(out.backlog).toEqual({ bytes: 4100, lost: 10 });
  const notice = "audio-agent: 10 log lines lost: the log's reader was not reading\n";
  await until(() => ((read += readAll()), read.endsWith(line(130))), "the last line", 5000);
  expect(read).toBe(Array.from({ length: 120 }, (_, i) => line(i)).join("") + notice + line(130));
});

test("a line written `always` (the run's failure line) waits past the bound, after the notice of lines lost before it", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer, 1000);
  defer(() => out.drain(0));
  for (let i = 0; i < 60; i++) out.write(line(i));
  out.write("audio-agent: the failure\n", true);
  expect(out.backlog).toEqual({ bytes: 1000 + 25, lost: 10 });
  const notice = "audio-agent: 10 log lines lost: the log's reader was not reading\n";
  let read = "";
  await until(() => ((read += readAll()), read.endsWith("the failure\n")), "the failure line", 5000);
  expect(read).toBe(Array.from({ length: 50 }, (_, i) => line(i)).join("") + notice + "audio-agent: the failure\n");
});

test("a line the pipe took part of is finished before the next, past the bound too, so the reader never sees half a line", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer, 100);
  const long = line(0, 6000);
  out.write(long);
  out.write(line(1));
  expect(out.backlog).toEqual({ bytes: 6000 - PIPE_BYTES, lost: 1 });
  let read = "";
  await until(() => ((read += readAll()), read.includes("lost")), "the notice", 5000);
  expect(read).toBe(long + "audio-agent: 1 log lines lost: the log's reader was not reading\n");
});

test("a reader that leaves (EPIPE) while lines wait loses them all, counted, those its bound had lost too: the next reader is told how many, before the next line", async () => {
  const pipe = stalledPipe();
  const out = new LineWriter(pipe.writer, 1000);
  defer(() => out.drain(0));
  // 40 lines in the pipe, 10 waiting, 50 lost to the bound.
  for (let i = 0; i < 100; i++) out.write(line(i));
  expect(out.backlog).toEqual({ bytes: 1000, lost: 50 });
  const read = await readAfterReaderReturns(out, pipe, line(100));
  // What the pipe held when its reader left is the next one's.
  expect(read).toBe(Array.from({ length: 40 }, (_, i) => line(i)).join("") + "audio-agent: 60 log lines lost: writing the log failed (EPIPE)\n" + line(100));
});

test("a reader that leaves (EPIPE) with a line begun: the next reader finds the part the pipe held, ended by the notice's own line, never run into it", async () => {
  const pipe = stalledPipe();
  const out = new LineWriter(pipe.writer);
  defer(() => out.drain(0));
  const long = line(0, 6000);
  out.write(long);
  expect(out.backlog.bytes).toBe(6000 - PIPE_BYTES);
  const read = await readAfterReaderReturns(out, pipe, line(1));
  expect(read).toBe(long.slice(0, PIPE_BYTES) + "\naudio-agent: 1 log lines lost: writing the log failed (EPIPE)\n" + line(1));
});

test.each([false, true])("a line a file took part of before its write failed (a size limit, a full disk) is taken off again: the file ends with its last whole line, for the next line to follow (written in the thread pool, the lines waiting behind it lost with it: %p)", (offLoop) => {
  const t = socketDir(defer, "aa-lw-");
  const path = t.path("agent.log");
  const script = t.path("limited.ts");
  lineWriterScript(
    script,
    `for (let i = 0; i < 40; i++) out.write(\`line \${String(i).padStart(4, "0")} \${"x".repeat(19)}\\n\`);`,
    false,
    offLoop,
  );
  // The write past 1000 bytes is cut short there and the next fails (EFBIG), as on a full disk.
  const run = withFileSizeLimit(1000, script, path);
  expect(run.stderr.toString()).toBe("");
  // 33 lines of 30 bytes fit whole; the 34th, cut at byte 1000, is not left half written.
  expect(readFileSync(path, "utf8")).toBe(Array.from({ length: 33 }, (_, i) => line(i, 30)).join(""));
});

test("drain, at exit, waits a bounded time for a reader that never reads, then gives up on the rest: nothing more is written", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer);
  for (let i = 0; i < 100; i++) out.write(line(i));
  expect(out.backlog.bytes).toBe(6000);
  out.drain(50);
  expect(out.backlog).toEqual({ bytes: 0, lost: 0 });
  expect(readAll()).toBe(Array.from({ length: 40 }, (_, i) => line(i)).join(""));
  // No retry left behind: a descriptor closed and its number reused must never get these lines.
  await Bun.sleep(250);
  expect(readAll()).toBe("");
});

test("a process that exits at once (process.exit, as on a second signal) with lines waiting still offers them at exit: a reader that reads then gets each, whole", async () => {
  const pipe = stalledPipe();
  const t = socketDir(defer, "aa-lw-");
  // 100 lines into a pipe that holds 40, then, with the 60 others waiting, an exit as soon as the test says so.
  const script = lineWriterScript(
    t.path("exit.ts"),
    `for (let i = 0; i < 100; i++) out.write("line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n");
fs.writeFileSync(${JSON.stringify(t.path("written"))}, String(out.backlog.bytes));
while (!fs.existsSync(${JSON.stringify(t.path("go"))})) Bun.sleepSync(5);
process.exit(0);`,
    true,
  );
  const child = start([BUN, script, pipe.path]);
  // writeFileSync makes the file before it writes its bytes: its content, not its being there, says the child wrote it.
  await until(() => existsSync(t.path("written")) && readFileSync(t.path("written"), "utf8") !== "", "the lines written", 20_000);
  expect(readFileSync(t.path("written"), "utf8")).toBe("6000");
  writeFileSync(t.path("go"), "");
  const lines = Array.from({ length: 100 }, (_, i) => line(i)).join("");
  let read = "";
  await until(() => ((read += pipe.readAll()), read.length >= lines.length), "every line", 10_000).catch(() => {});
  expect((await child.done).code).toBe(0);
  expect(read).toBe(lines);
});

test("retire, at exit once the descriptor is blocking again, gives up what waits and writes nothing more, a line `always` neither, whether the pipe has room or not", async () => {
  const { writer, readAll } = stalledPipe();
  const out = new LineWriter(writer);
  for (let i = 0; i < 100; i++) out.write(line(i));
  out.retire();
  expect(out.backlog).toEqual({ bytes: 0, lost: 0 });
  // The reader takes what the pipe held: it has room now, and still nothing more comes.
  expect(readAll()).toBe(Array.from({ length: 40 }, (_, i) => line(i)).join(""));
  out.write(line(100));
  out.write(line(101), true);
  out.drain(50);
  await Bun.sleep(100);
  expect(readAll()).toBe("");
  expect(out.backlog).toEqual({ bytes: 0, lost: 0 });
});

/** A file of its own in a temp dir, opened for appending as a shell's `2>>FILE` does, and closed after the test. */
function appendedLog(name = "agent.log"): { path: string; fd: number } {
  const t = socketDir(defer, "aa-lw-");
  const path = t.path(name);
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND, 0o644);
  defer(() => closeSync(fd));
  return { path, fd };
}

/** A log file appended to (appendedLog) in the thread pool, as every capped log is, kept under `maxBytes`: what its turns tell kept in `failures`. */
function cappedLog(maxBytes: number, name?: string): { path: string; out: LineWriter; failures: string[] } {
  const { path, fd } = appendedLog(name);
  const out = new LineWriter(fd, undefined, true);
  const failures: string[] = [];
  out.capAt(maxBytes, (why) => failures.push(why));
  return { path, out, failures };
}

describe.skipIf(!canUnshare("--mount"))("lines whose writes fail (a full disk)", () => {
  /** A LineWriter on a log of three lines on a disk then full (the log's first page all it has), opened as `flags` say. */
  async function onFullDisk(flags: number) {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    const path = disk.path("agent.log");
    const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | flags, 0o644);
    defer(() => closeSync(fd));
    const out = new LineWriter(fd);
    const before = [line(0), line(1), line(2)];
    for (const text of before) out.write(text);
    disk.fill();
    // Written up to the page's end, then ENOSPC; the next needs a page too. Then the disk has room again.
    out.write(line(3, 4000));
    out.write(line(4));
    rmSync(disk.path("filler"));
    out.write(line(5));
    return { path, out, before: before.join("") };
  }
  const notice = (count: number) => `audio-agent: ${count} log lines lost: writing the log failed (ENOSPC)\n`;

  /**
   * `count` lines of 100 bytes written by a LineWriter kept under 1 MiB (capAt), its turns told in the log,
   * on a 64 KiB disk holding `old` bytes of an earlier turn's ".1" and `aside` bytes of a copy left under
   * the hidden name (by an agent that ended mid-copy): run in the disk's mount namespace, where the log's
   * name (that the turn copies by) is the disk's.
   */
  async function cappedOnSmallDisk(old: number, count: number, aside = 0, offLoop = false) {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    const path = t.path("disk/agent.log");
    if (old > 0) writeFileSync(disk.path("agent.log.1"), "o".repeat(old - 1) + "\n");
    if (aside > 0) writeFileSync(disk.path(".agent.log.1.new"), "a".repeat(aside));
    const script = t.path("capped.ts");
    lineWriterScript(
      script,
      `out.capAt(1024 * 1024, (why) => out.write("warn: " + why + "\\n"));
for (let i = 0; i < ${count}; i++) out.write("line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n");`,
      false,
      offLoop,
    );
    const done = await run(disk.run([BUN, script, path]));
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    const lines = Array.from({ length: count }, (_, i) => line(i));
    return { path, lines, names: () => readdirSync(disk.path("")).sort(), older: () => readFileSync(disk.path("agent.log.1"), "utf8"), hasOlder: () => existsSync(disk.path("agent.log.1")), log: () => readFileSync(disk.path("agent.log"), "utf8") };
  }
  const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  test.each([false, true])("a log kept under a size (capAt) whose disk fills below it is copied and emptied then, the .1 before removed to make room for the copy: no line lost, the newest in the log (written in the thread pool: %p)", async (offLoop) => {
    // About 24 KiB of the disk is the log's: full at about 240 lines, turned once by 300.
    const { path, lines, older, log } = await cappedOnSmallDisk(40 * 1024, 300, 0, offLoop);
    const text = log();
    const [first, ...after] = text.slice(0, -1).split("\n");
    expect(first).toMatch(new RegExp(`^warn: no room for the log's next line: copied to ${escaped(path)}\\.1 and emptied at \\d+ bytes, below its bound of 1048576$`));
    // Every line once, in order, across the two files, the turn's line between them.
    expect(older() + after.map((l) => l + "\n").join("")).toBe(lines.join(""));
    expect(text).not.toContain("log lines lost");
  });

  test("a line too long for the room a turn for room makes (written in the thread pool) is lost, counted, once: the log is not turned again for it, and the next line follows the turn's notice", async () => {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    // A page of the log, and the rest of the disk another's: emptied, the log has that page's room, no more.
    writeFileSync(disk.path("agent.log"), Array.from({ length: 40 }, (_, i) => line(i)).join("") + "o".repeat(4096 - 40 * 100 - 1) + "\n");
    disk.fill();
    const script = lineWriterScript(
      t.path("long.ts"),
      `out.capAt(1024 * 1024, (why) => out.write("warn: " + why + "\\n"));
out.write("long " + "x".repeat(8 * 1024) + "\\n");
await out.settled();
out.write("after\\n");
await out.settled();`,
      false,
      true,
    );
    const done = await run(disk.run([BUN, script, t.path("disk/agent.log")]), { timeoutMs: 20_000 });
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    const [first, ...after] = readFileSync(disk.path("agent.log"), "utf8").slice(0, -1).split("\n");
    expect(first).toMatch(/^warn: no room for the log's next line, so it is emptied at 4096 bytes, below its bound of 1048576; cannot copy the log to .*\.1 \(ENOSPC\)/);
    expect(after).toEqual([notice(1).trimEnd(), "after"]);
    expect(existsSync(disk.path("agent.log.1"))).toBe(false);
  });

  test("a notice of lines lost to the backlog's bound that finds no room (written in the thread pool) turns the log and is written after the turn's notice: those lines told once, not again as lost to a failed write", async () => {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    // The log's page has room for four lines of 100 bytes, and the disk no more.
    writeFileSync(disk.path("agent.log"), Array.from({ length: 36 }, (_, i) => line(i)).join("") + "o".repeat(95) + "\n");
    disk.fill();
    const script = lineWriterScript(
      t.path("bound.ts"),
      `const log = new LineWriter(fs.openSync(process.argv[2], fs.constants.O_WRONLY | fs.constants.O_APPEND), 300, true);
log.capAt(1024 * 1024, (why) => log.write("warn: " + why + "\\n"));
// One under way, three waiting (the bound), two lost to it: their notice needs a page of its own.
for (let i = 0; i < 6; i++) log.write("line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n");
await log.settled();
log.write("after\\n");
await log.settled();`,
    );
    const done = await run(disk.run([BUN, script, t.path("disk/agent.log")]), { timeoutMs: 20_000 });
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    const [first, ...after] = readFileSync(disk.path("agent.log"), "utf8").slice(0, -1).split("\n");
    expect(first).toMatch(/^warn: no room for the log's next line, so it is emptied at 4096 bytes, below its bound of 1048576; cannot copy the log to .*\.1 \(ENOSPC\)/);
    expect(after).toEqual(["audio-agent: 2 log lines lost: the log's disk was not taking writes", "after"]);
  });

  test("a log whose disk fills below its size, taken by a copy left under the hidden name (an agent ended mid-copy), is copied once that is removed: no line lost", async () => {
    // The left copy takes 40 KiB of the 64: the log fills the rest at about 240 lines, too few for its copy beside it.
    const { path, lines, older, log, names } = await cappedOnSmallDisk(0, 300, 40 * 1024);
    const text = log();
    const [first, ...after] = text.slice(0, -1).split("\n");
    expect(first).toMatch(new RegExp(`^warn: no room for the log's next line: copied to ${escaped(path)}\\.1 and emptied at \\d+ bytes, below its bound of 1048576$`));
    expect(older() + after.map((l) => l + "\n").join("")).toBe(lines.join(""));
    expect(names()).toEqual(["agent.log", "agent.log.1"]);
  });

  test("a log kept under a size whose disk has no room for the copy is emptied all the same, its first line saying why and that the lines before are lost: the newest lines get in", async () => {
    const { path, lines, hasOlder, log } = await cappedOnSmallDisk(0, 1000);
    expect(hasOlder()).toBe(false);
    const text = log();
    const [first, ...after] = text.slice(0, -1).split("\n");
    expect(first).toMatch(new RegExp(`^warn: no room for the log's next line, so it is emptied at \\d+ bytes, below its bound of 1048576; cannot copy the log to ${escaped(path)}\\.1 \\(ENOSPC\\): the lines before this one are lost$`));
    // The lines after the last turn, the newest, whole and in order, up to the last.
    expect(after.length).toBeGreaterThan(0);
    expect(after.map((l) => l + "\n").join("")).toBe(lines.slice(-after.length).join(""));
  });

  test("are counted and lost, the part of one a file appended to took is taken off, and once the log takes lines again a notice says how many and why, before the next line; once", async () => {
    const { path, out, before } = await onFullDisk(constants.O_APPEND);
    // Taken off, the long line left the page's room to the next line, and to the notice before it.
    expect(readFileSync(path, "utf8")).toBe(before + notice(1) + line(4) + line(5));
    out.write(line(6));
    expect(readFileSync(path, "utf8")).toBe(before + notice(1) + line(4) + line(5) + line(6));
  });

  test("while the disk stays full, the lines lost are told in one notice, written only with the line after it: the room a line taken off left is not filled with notices of one line each", async () => {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    const fd = openSync(disk.path("agent.log"), constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND, 0o644);
    defer(() => closeSync(fd));
    const out = new LineWriter(fd);
    out.write(line(0));
    disk.fill();
    // Each line needs more than the page's room; a notice would fit in it.
    for (let i = 1; i <= 10; i++) out.write(line(i, 4050));
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(line(0));
    rmSync(disk.path("filler"));
    out.write(line(11));
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(line(0) + notice(10) + line(11));
  });

  test("a file written at its own offset (2>FILE) keeps the part it took, and the notice begins a line of its own after it", async () => {
    const { path, before } = await onFullDisk(0);
    expect(readFileSync(path, "utf8")).toBe(before + line(3, 4000).slice(0, 4096 - 300) + "\n" + notice(2) + line(5));
  });
});

describe("a log file kept under a size (capAt)", () => {
  test("a copy that cannot be made (FILE.1 a directory): the file is emptied all the same, its first line then says why and that the lines before it are lost", async () => {
    const { path, fd } = appendedLog();
    mkdirSync(`${path}.1`);
    const out = new LineWriter(fd, undefined, true);
    out.capAt(1000, (why) => out.write(`warn: ${why}\n`));
    for (let i = 0; i < 40; i++) out.write(line(i, 30));
    await out.settled();
    const kept = readFileSync(path, "utf8").split("\n");
    expect(kept[0]).toBe(`warn: cannot copy the log to ${path}.1 (EISDIR): the lines before this one are lost`);
    expect(kept.slice(1, -1)).toEqual(Array.from({ length: 6 }, (_, i) => line(34 + i, 30).trimEnd()));
  });

  test("FILE.1 a link (a symbolic one to a file elsewhere, or a hard one to FILE itself) is replaced by the copy, never written through: the file it led to is left as it was", async () => {
    const { path, out, failures } = cappedLog(1000);
    const elsewhere = `${path}.elsewhere`;
    writeFileSync(elsewhere, "kept\n");
    symlinkSync(elsewhere, `${path}.1`);
    const lines = Array.from({ length: 40 }, (_, i) => line(i, 30));
    for (const text of lines) out.write(text);
    await out.settled();
    expect(readFileSync(elsewhere, "utf8")).toBe("kept\n");
    expect(lstatSync(`${path}.1`).isFile()).toBe(true);
    expect(readFileSync(`${path}.1`, "utf8")).toBe(lines.slice(0, 34).join(""));
    // A hard link to the log: copying onto it would empty the log itself before it is read.
    rmSync(`${path}.1`);
    linkSync(path, `${path}.1`);
    for (let i = 40; i < 68; i++) out.write(line(i, 30));
    await out.settled();
    expect(readFileSync(`${path}.1`, "utf8")).toBe(Array.from({ length: 34 }, (_, i) => line(34 + i, 30)).join(""));
    expect(readFileSync(path, "utf8")).toBe("");
    expect(failures).toEqual([]);
  });

  /**
   * 81 lines of 100 bytes (8100: two pages) logged under a cap of 8192 on a 64 KiB disk that holds
   * `older` bytes of an earlier turn's FILE.1; then the disk filled but for `pagesLeft` pages, and an
   * 82nd line written, which takes the log to a third page and past its cap: a turn. `made`: the
   * names the turn made or renamed in the disk's directory (inotify), in order.
   */
  async function turnOnFullDisk(pagesLeft: number, older = 0) {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    if (older > 0) writeFileSync(disk.path("agent.log.1"), "o".repeat(older - 1) + "\n");
    const script = t.path("turn.ts");
    lineWriterScript(
      script,
      `import { ftruncateSync, openSync, writeSync } from "node:fs";
const filler = process.argv[3];
out.capAt(8192, (why) => out.write("warn: " + why + "\\n"));
const line = (i) => "line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n";
for (let i = 0; i < 81; i++) out.write(line(i));
await out.settled();
const fd = openSync(filler, "w");
let size = 0;
try { for (;;) size += writeSync(fd, new Uint8Array(4096)); } catch (e) { if (e.code !== "ENOSPC") throw e; }
ftruncateSync(fd, size - ${pagesLeft} * 4096);
const made = [];
// The filler touched after the turn: its event comes after all of the turn's (one inotify queue, in order).
const { promise: touched, resolve } = Promise.withResolvers();
const watcher = fs.watch(process.argv[4], (event, name) => (name === "filler" ? resolve() : made.push(name)));
out.write(line(81));
await out.settled();
fs.futimesSync(fd, new Date(), new Date());
await touched;
watcher.close();
console.log(JSON.stringify(made.filter((name) => name !== "agent.log")));`,
      false,
      true,
    );
    const done = await run(disk.run([BUN, script, t.path("disk/agent.log"), t.path("disk/filler"), t.path("disk")]));
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    return { log: t.path("disk/agent.log"), disk, made: [...new Set(JSON.parse(done.stdout) as string[])] };
  }

  test.skipIf(!canUnshare("--mount"))("a copy that runs out of room part-way leaves no FILE.1: no part of the log, its last line cut, taking the room; the file is emptied all the same, its first line saying why", async () => {
    // One page left: too few for the copy's three.
    const { log, disk } = await turnOnFullDisk(1);
    expect(existsSync(disk.path("agent.log.1"))).toBe(false);
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(`warn: cannot copy the log to ${log}.1 (ENOSPC): the lines before this one are lost\n`);
  });

  test("a reader of FILE.1 while the log turns finds the copy before or the new one, whole: never no FILE.1 nor part of one (each made aside and renamed over it)", async () => {
    // 8 MiB a turn: a copy of some milliseconds, a window the watcher cannot miss if there is one.
    const [lineBytes, perTurn] = [8192, 1024];
    const { path, out, failures } = cappedLog(lineBytes * perTurn);
    const t = socketDir(defer, "aa-lw-");
    const watcher = t.path("watch.js");
    writeFileSync(
      watcher,
      `import { existsSync, statSync } from "node:fs";
const [older, size, stop] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const counts = { whole: 0, missing: 0, partial: 0 };
let seen = false;
console.error("watching");
while (!existsSync(stop)) {
  let bytes;
  try {
    bytes = statSync(older).size;
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
    if (seen) counts.missing++;
    continue;
  }
  seen = true;
  counts[bytes === size ? "whole" : "partial"]++;
  if (counts.whole === 1 && bytes === size) console.error("whole");
}
console.log(JSON.stringify(counts));`,
    );
    const watching = start([BUN, watcher, `${path}.1`, String(lineBytes * perTurn), t.path("stop")]);
    await watching.waitForStderr("watching");
    // Five turns, the last made as the line after them is written; each line once the one before is in, none past the backlog's bound.
    for (let i = 0; i <= 5 * perTurn; i++) {
      out.write(line(i, lineBytes));
      await out.settled();
    }
    // The last turn's copy stays: a watcher kept off the CPU while the log turned sees it whole before it stops.
    await watching.waitForStderr("whole");
    writeFileSync(t.path("stop"), "");
    const done = await watching.done;
    expect(done.code).toBe(0);
    const counts = JSON.parse(done.stdout);
    expect(counts.whole).toBeGreaterThan(0);
    expect(counts).toEqual({ whole: counts.whole, missing: 0, partial: 0 });
    expect(readFileSync(`${path}.1`, "utf8")).toBe(Array.from({ length: perTurn }, (_, i) => line(4 * perTurn + i, lineBytes)).join(""));
    expect(readFileSync(path, "utf8")).toBe(line(5 * perTurn, lineBytes));
    expect(failures).toEqual([]);
  });

  test("the turn is made in the thread pool: the process's timers run while a copy of megabytes is under way, and the lines they write meanwhile wait and follow it, in order", async () => {
    // 16 MiB a turn: a copy of some milliseconds on any disk that copies its bytes.
    const [lineBytes, perTurn] = [8192, 2048];
    const { path, out, failures } = cappedLog(lineBytes * perTurn);
    const aside = `${dirname(path)}/.${basename(path)}.1.new`;
    // A timer that finds the copy under its hidden name writes a line then: on the event loop, a copy made there is never found.
    let written = 0;
    const during: string[][] = [[], [], []];
    const timer = setInterval(() => {
      if (!existsSync(aside)) return;
      // Of the first turn (made once perTurn lines are in) or the second.
      const turn = during[Math.floor(written / perTurn)]!;
      turn.push(`during turn ${Math.floor(written / perTurn)}: ${turn.length}\n`);
      out.write(turn.at(-1)!);
    }, 1);
    defer(() => clearInterval(timer));
    const lines = Array.from({ length: 2 * perTurn }, (_, i) => line(i, lineBytes));
    for (const text of lines) {
      out.write(text);
      written++;
      await out.settled();
    }
    clearInterval(timer);
    await out.settled();
    expect(during[1]!.length + during[2]!.length).toBeGreaterThan(0);
    expect(failures).toEqual([]);
    // Each turn's lines after it in the emptied file: the first's before the lines that led to the second.
    expect(readFileSync(`${path}.1`, "utf8")).toBe(during[1]!.join("") + lines.slice(perTurn).join(""));
    expect(readFileSync(path, "utf8")).toBe(during[2]!.join(""));
  });

  test("a process that exits at once (process.exit, as on a second signal) while a turn's copy is under way ends, the lines waiting given up (the turn goes on only through the event loop); the next run's first line turns the log, the copy left under the hidden name removed", async () => {
    const t = socketDir(defer, "aa-lw-");
    const path = t.path("agent.log");
    const [lineBytes, perTurn] = [8192, 2048];
    const script = (body: string) =>
      lineWriterScript(
        t.path("run.ts"),
        `out.capAt(${lineBytes * perTurn}, () => {});
const line = (i) => "line " + String(i).padStart(4, "0") + " " + "x".repeat(${lineBytes - 11}) + "\\n";
${body}`,
        false,
        true,
      );
    const first = await run([
      BUN,
      script(`for (let i = 0; i < ${perTurn - 1}; i++) {
  out.write(line(i));
  await out.settled();
}
// The line that takes the log to its bound: the turn begins as its write ends, and the process exits while the copy is made.
const aside = ${JSON.stringify(t.path(".agent.log.1.new"))};
const timer = setInterval(() => {
  if (!fs.existsSync(aside)) return;
  for (let i = 0; i < 3; i++) out.write("after " + i + "\\n");
  process.exit(0);
}, 1);
out.write(line(${perTurn - 1}));
await out.settled();
clearInterval(timer);
console.log("the turn ended before a timer found it under way");`),
      path,
    ]);
    expect(first.stderr).toBe("");
    expect(first.stdout).toBe("");
    expect(first.code).toBe(0);
    const lines = Array.from({ length: perTurn }, (_, i) => line(i, lineBytes)).join("");
    expect(readFileSync(path, "utf8")).toBe(lines);
    expect(existsSync(t.path(".agent.log.1.new"))).toBe(true);
    const next = await run([BUN, script(`out.write("next run\\n");\nawait out.settled();`), path]);
    expect(next.stderr).toBe("");
    expect(next.code).toBe(0);
    expect(readFileSync(`${path}.1`, "utf8")).toBe(lines + "next run\n");
    expect(readFileSync(path, "utf8")).toBe("");
    expect(readdirSync(t.path("")).filter((name) => name.startsWith("."))).toEqual([]);
  });

  test.skipIf(!freezable || !canSlowWrites(tmpdir()))("a process that exits at once while a turn with no room for a copy beside the one before is copying (a slow disk: longer than the exit waits) leaves no part of the log at FILE.1: the copy is made under the hidden name all the same, which the next run's turn removes", async () => {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await freezableDisk(t.path("disk"));
    defer(disk.release);
    const path = join(t.path("disk"), "agent.log");
    const [lineBytes, perTurn] = [8192, 512];
    const lines = Array.from({ length: perTurn }, (_, i) => line(i, lineBytes)).join("");
    writeFileSync(disk.path("agent.log"), lines.slice(0, -lineBytes));
    // Room for one copy, not for two: the turn removes the one before first.
    const free = statfsSync(disk.path("")).bavail * statfsSync(disk.path("")).bsize;
    writeFileSync(disk.path("filler"), new Uint8Array(free - 1.5 * lines.length));
    // 4 MiB read at 1 MiB/s: the copy takes longer than the exit waits for it (a second).
    dropCached(disk.path("agent.log"));
    const slow = slowReads(disk.path(""), 1 << 20)!;
    defer(slow.release);
    const script = (body: string) =>
      lineWriterScript(
        t.path("run.ts"),
        `out.capAt(${lines.length}, () => {});
${body}`,
        false,
        true,
      );
    const first = start(
      disk.run([
        BUN,
        script(`const [older, aside, go] = [process.argv[2] + ".1", ${JSON.stringify(join(t.path("disk"), ".agent.log.1.new"))}, ${JSON.stringify(t.path("go"))}];
while (!fs.existsSync(go)) await Bun.sleep(1);
// The line that takes the log to its bound: the process exits once the copy has begun.
const timer = setInterval(() => {
  if (fs.existsSync(older) || fs.existsSync(aside)) process.exit(0);
}, 1);
out.write(${JSON.stringify(lines.slice(-lineBytes))});
await out.settled();
clearInterval(timer);
console.log("the turn ended before a timer found it under way");`),
        path,
      ]),
    );
    slow.admit(first.pid);
    writeFileSync(t.path("go"), "");
    const done = await first.done;
    expect(done.stderr).toBe("");
    expect(done.stdout).toBe("");
    expect(done.code).toBe(0);
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(lines);
    expect(existsSync(disk.path("agent.log.1"))).toBe(false);
    expect(existsSync(disk.path(".agent.log.1.new"))).toBe(true);
    const next = await run(disk.run([BUN, script(`out.write("next run\\n");\nawait out.settled();`), path]));
    expect(next.stderr).toBe("");
    expect(next.code).toBe(0);
    expect(readFileSync(disk.path("agent.log.1"), "utf8")).toBe(lines + "next run\n");
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe("");
    expect(readdirSync(disk.path("")).sort()).toEqual(["agent.log", "agent.log.1", "filler", "lost+found"]);
  }, 60_000);

  test("a log whose name leaves no room for the hidden copy's (255 bytes at most) is still copied, at FILE.1 itself", async () => {
    // FILE.1's name fits; ".FILE.1.new" does not.
    const { path, out, failures } = cappedLog(1000, "l".repeat(250));
    const lines = Array.from({ length: 40 }, (_, i) => line(i, 30));
    for (const text of lines) out.write(text);
    await out.settled();
    expect(readFileSync(`${path}.1`, "utf8")).toBe(lines.slice(0, 34).join(""));
    expect(readFileSync(path, "utf8")).toBe(lines.slice(34).join(""));
    expect(failures).toEqual([]);
  });

  // The copy before takes two pages, the log three once the 82nd line is in.
  const turned = Array.from({ length: 82 }, (_, i) => line(i)).join("");
  test.skipIf(!canUnshare("--mount"))("a disk with room for one copy but not two: the copy before is removed first to make room, and the new one is made (and no hidden copy left)", async () => {
    // One page left: too few for a copy beside the one before, enough once it is gone.
    const { disk, made } = await turnOnFullDisk(2, 8100);
    // Its name first as the one before is removed, then the copy made aside and renamed to it.
    expect(made).toEqual(["agent.log.1", ".agent.log.1.new"]);
    expect(readFileSync(disk.path("agent.log.1"), "utf8")).toBe(turned);
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe("");
    expect(readdirSync(disk.path("")).sort()).toEqual(["agent.log", "agent.log.1", "filler"]);
  });

  test.skipIf(!canUnshare("--mount"))("a disk with room for the copy beside the one before, but not for as much again: the copy before goes first all the same, so a turn never fills a disk others write to", async () => {
    // Four pages left: the copy's three would fit, and leave one.
    const { disk, made } = await turnOnFullDisk(5, 8100);
    expect(made).toEqual(["agent.log.1", ".agent.log.1.new"]);
    expect(readFileSync(disk.path("agent.log.1"), "utf8")).toBe(turned);
  });

  test.skipIf(!canUnshare("--mount"))("a disk with room for the copy beside the one before and as much again: made under the hidden name, then renamed over FILE.1", async () => {
    // Seven pages left: the copy's three, and four after it.
    const { disk, made } = await turnOnFullDisk(8, 8100);
    expect(made).toEqual([".agent.log.1.new", "agent.log.1"]);
    expect(readFileSync(disk.path("agent.log.1"), "utf8")).toBe(turned);
    expect(readdirSync(disk.path("")).sort()).toEqual(["agent.log", "agent.log.1", "filler"]);
  });

  test("a log removed while written to (its space freed only once the agent exits) is still emptied at the cap, with nothing to copy it to: its size stays bounded", async () => {
    const { path, fd } = appendedLog();
    const out = new LineWriter(fd, undefined, true);
    out.capAt(1000, (why) => out.write(`warn: ${why}\n`));
    rmSync(path);
    for (let i = 0; i < 200; i++) out.write(line(i, 30));
    await out.settled();
    expect(fstatSync(fd).size).toBeLessThan(1000);
    const kept = readFileSync(`/proc/self/fd/${fd}`, "utf8").split("\n");
    expect(kept[0]).toBe("warn: the log file has no name left (removed), so no copy is made: the lines before this one are lost");
    expect(kept.at(-2)).toBe(line(199, 30).trimEnd());
    expect(existsSync(`${path}.1`)).toBe(false);
  });

  test("a notice of lost lines longer than the cap itself (a log path thousands of bytes long) is written whole, and the next line turns the file as any: no turn within a turn", async () => {
    const { path, fd } = appendedLog();
    mkdirSync(`${path}.1`);
    const out = new LineWriter(fd, undefined, true);
    let notices = 0;
    out.capAt(4096, () => (notices++, out.write(`warn: ${"n".repeat(5000)}\n`)));
    for (let i = 0; i < 140; i++) out.write(line(i, 30));
    await out.settled();
    // 137 lines reach the cap: a turn, and its notice alone is past the cap; each line after it, another turn and notice.
    expect(notices).toBe(4);
    // The last line turned it too: its notice is all the file holds.
    expect(readFileSync(path, "utf8")).toBe(`warn: ${"n".repeat(5000)}\n`);
  });

  test("what the log is, said for --log-max-bytes: a file appended to by its name, else a pipe, or a file that writing would not follow once emptied", () => {
    const { path, fd } = appendedLog();
    expect(appendedFile(fd)).toEqual({ path });
    const truncating = openSync(path, constants.O_WRONLY);
    defer(() => closeSync(truncating));
    expect(appendedFile(truncating)).toEqual({ not: "a file not opened for appending (2>FILE, where 2>>FILE appends)" });
    const { writer } = stalledPipe();
    expect(appendedFile(writer)).toEqual({ not: "a pipe" });
  });
});

describe("a log file written in the thread pool (offLoop)", () => {
  test.skipIf(!freezable)("on a disk that stops taking writes (fsfreeze: a card stalled in its write) the write waits in a thread of the pool, not on the event loop: lines written meanwhile wait, in order, settled() with them, and all are in the file once the disk takes writes again", async () => {
    const t = socketDir(defer, "aa-lw-");
    mkdirSync(t.path("disk"));
    const disk = await freezableDisk(t.path("disk"));
    defer(disk.release);
    const [ready, go, ticks, settled] = [t.path("ready"), t.path("go"), t.path("ticks"), t.path("settled")];
    const script = lineWriterScript(
      t.path("frozen.ts"),
      `const line = (i) => "line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n";
out.write(line(0));
await out.settled();
fs.writeFileSync(${JSON.stringify(ready)}, "");
while (!fs.existsSync(${JSON.stringify(go)})) await Bun.sleep(5);
for (let i = 1; i < 4; i++) out.write(line(i));
// The event loop's timers run on while the disk holds the write.
for (let tick = 1; tick <= 20; tick++) {
  await Bun.sleep(10);
  fs.writeFileSync(${JSON.stringify(ticks)}, String(tick));
}
out.write(line(4));
await out.settled();
fs.writeFileSync(${JSON.stringify(settled)}, "");`,
      false,
      true,
    );
    const child = start(disk.run([BUN, script, t.path("disk/agent.log")]));
    await until(() => existsSync(ready), "the first line written", 20_000);
    disk.freeze();
    writeFileSync(go, "");
    await until(() => existsSync(ticks) && readFileSync(ticks, "utf8") === "20", "the timers' ticks while the disk is frozen", 10_000);
    expect(existsSync(settled)).toBe(false);
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(line(0));
    disk.thaw();
    const done = await child.done;
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    expect(existsSync(settled)).toBe(true);
    expect(readFileSync(disk.path("agent.log"), "utf8")).toBe(Array.from({ length: 5 }, (_, i) => line(i)).join(""));
  }, 60_000);

  test("while the disk holds a line's write, the lines waiting behind it wake nothing: no timer offers them again, the write's end does, and all follow in order", async () => {
    // A FIFO written blocking holds the pool's write as a frozen disk does, without root.
    const t = socketDir(defer, "aa-lw-");
    const fifo = makeFifo(t.path("log"));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    defer(() => closeSync(reader));
    expect(setPipeSize(reader, PIPE_BYTES)).toMatchObject({ ok: true, bytes: PIPE_BYTES });
    const [ready, settled] = [t.path("ready"), t.path("settled")];
    const held = `${"x".repeat(2 * PIPE_BYTES)}\n`;
    const script = lineWriterScript(
      t.path("held.ts"),
      `out.write(${JSON.stringify(held)});
for (let i = 1; i < 4; i++) out.write("line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n");
fs.writeFileSync(${JSON.stringify(ready)}, "");
await out.settled();
fs.writeFileSync(${JSON.stringify(settled)}, "");`,
      false,
      true,
    );
    // The device's runtime settings: none of Bun's own timers wakes the process either.
    const child = start([BUN, script, fifo], { env: cleanEnv(DEVICE_RUNTIME_ENV) });
    await until(() => existsSync(ready), "the lines written", 20_000);
    await Bun.sleep(300);
    const before = wakeUps(child.pid);
    await Bun.sleep(1000);
    // None here; offered again every 20 ms, some fifty.
    expect(wakeUps(child.pid) - before).toBeLessThanOrEqual(10);
    expect(existsSync(settled)).toBe(false);
    let read = "";
    const all = held + [1, 2, 3].map((i) => line(i)).join("");
    await until(() => ((read += readAvailableText(reader)), read.length >= all.length), "every line", 10_000);
    const done = await child.done;
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    expect(existsSync(settled)).toBe(true);
    expect(read).toBe(all);
  }, 60_000);

  test("a process that exits at once (process.exit, as on a second signal) with a line under way in the thread pool and more waiting: each is in the file, once, in order", async () => {
    const t = socketDir(defer, "aa-lw-");
    const path = t.path("agent.log");
    const script = lineWriterScript(
      t.path("exit.ts"),
      `for (let i = 0; i < 100; i++) out.write("line " + String(i).padStart(4, "0") + " " + "x".repeat(89) + "\\n");
process.exit(0);`,
      false,
      true,
    );
    const done = await run([BUN, script, path]);
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    expect(readFileSync(path, "utf8")).toBe(Array.from({ length: 100 }, (_, i) => line(i)).join(""));
  });

  test("past the cap it is copied to FILE.1 and emptied as each line ends: the two hold the latest lines whole and in order, none lost at a turn, neither past the cap by more than a line", async () => {
    const { path, out, failures } = cappedLog(1000);
    const lines = Array.from({ length: 95 }, (_, i) => line(i, 30));
    for (const text of lines) out.write(text);
    // Nothing written yet but the first line, under way in the thread pool.
    expect(out.backlog.bytes).toBe(94 * 30);
    await out.settled();
    expect(out.backlog.bytes).toBe(0);
    expect(readFileSync(`${path}.1`, "utf8")).toBe(lines.slice(34, 68).join(""));
    expect(readFileSync(path, "utf8")).toBe(lines.slice(68).join(""));
    expect(failures).toEqual([]);
  });
});
