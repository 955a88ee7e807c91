/** The look at a sink's regular file against its path: what it finds, when it looks, what it tells, and which sinks have one. */
import { describe, expect, test } from "bun:test";
import { closeSync, linkSync, openSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { openSink } from "../../src/media/open.ts";
import { SINK_LOOK_MS, SinkFileWatch } from "../../src/media/sink-file-watch.ts";
import { encodeMessage, FrameParser, OUTPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { testPayload } from "../support/payloads.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** What a report was told, one string a line: `level message {fields}`. */
function reportLines() {
  const lines: string[] = [];
  const report = (level: string, message: string, fields?: Record<string, unknown>) => lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  return { lines, report };
}

/** A file open for writing at `rec` in a fresh directory, and a watch on it; the descriptor closed after the test. */
function watched() {
  const t = socketDir(defer, "sfw-");
  const rec = t.path("rec.opus");
  const fd = openSync(rec, "w");
  defer(() => closeSync(fd));
  const { lines, report } = reportLines();
  return { ...t, rec, lines, watch: new SinkFileWatch(rec, fd, report) };
}

describe("SinkFileWatch", () => {
  test("tells once, at warn, naming the path and what happened, while the path does not lead to the file; at info once it does again", () => {
    const { rec, lines, watch, path } = watched();
    let now = 0;
    const look = () => watch.look((now += SINK_LOOK_MS));
    expect(look()).toBe("in_place");
    renameSync(rec, path("aside"));
    expect([look(), look()]).toEqual(["moved", "moved"]);
    writeFileSync(rec, "another");
    expect([look(), look()]).toEqual(["replaced", "replaced"]);
    renameSync(path("aside"), rec);
    expect([look(), look()]).toEqual(["in_place", "in_place"]);
    unlinkSync(rec);
    expect([look(), look()]).toEqual(["removed", "removed"]);
    const goesOn = "what is recorded goes on into the file opened, which is no longer at that path";
    expect(lines).toEqual([
      `warn the sink file was moved away: no file is at its path now; ${goesOn} ${JSON.stringify({ sink: rec, now_at: path("aside") })}`,
      `warn the sink file was replaced: the path leads to another file now; ${goesOn} ${JSON.stringify({ sink: rec, now_at: path("aside") })}`,
      `info the sink file is at its path again; the recording there goes on ${JSON.stringify({ sink: rec })}`,
      `warn the sink file was removed: ${goesOn} (its space is freed at exit) ${JSON.stringify({ sink: rec })}`,
    ]);
  });

  test("a file replaced by a rename over its path, kept by another hard link: told replaced, with no now_at (the name it was opened by is gone)", () => {
    const { rec, lines, watch, path } = watched();
    expect(watch.look(0)).toBe("in_place");
    linkSync(rec, path("kept"));
    writeFileSync(path("new"), "another");
    renameSync(path("new"), rec);
    expect(watch.look(SINK_LOOK_MS)).toBe("replaced");
    expect(lines).toEqual([
      `warn the sink file was replaced: the path leads to another file now; what is recorded goes on into the file opened, which is no longer at that path ${JSON.stringify({ sink: rec })}`,
    ]);
  });

  test("looks no more than once every SINK_LOOK_MS, however often it is asked: what it found last stands meanwhile", () => {
    const { rec, lines, watch } = watched();
    expect(watch.look(0)).toBe("in_place");
    unlinkSync(rec);
    expect(watch.look(1)).toBe("in_place");
    expect(watch.look(SINK_LOOK_MS - 1)).toBe("in_place");
    expect(lines).toEqual([]);
    expect(watch.look(SINK_LOOK_MS)).toBe("removed");
    expect(lines).toHaveLength(1);
  });

  test("end() looks a last time, however recent the look before, and never again: the descriptor is about to close", () => {
    const { rec, lines, watch, path } = watched();
    expect(watch.look(0)).toBe("in_place");
    unlinkSync(rec);
    watch.end();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith("warn the sink file was removed:");
    // A file at the path again, by name: no look finds it, the file opened having no name.
    writeFileSync(path("rec.opus"), "");
    expect(watch.look(10 * SINK_LOOK_MS)).toBe("removed");
    expect(lines).toHaveLength(1);
  });
});

describe("the sinks openSink opens", () => {
  const parser = new FrameParser(OUTPUT_MAGIC);
  const frame = (i: number) => {
    parser.push(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), 1n));
    return parser.next()!;
  };

  for (const format of ["wire", "ogg"] as const) {
    test(`a ${format} sink on a regular file has a look at it, told on the sink's report; one removed just before the close is told at the close`, async () => {
      const t = socketDir(defer, "sfw-");
      const rec = t.path("rec");
      const { lines, report } = reportLines();
      const sink = openSink(format, rec, { preSkip: 312, pageMs: 20, report });
      sink.write(frame(0));
      expect(sink.filePlacement?.()).toBe("in_place");
      unlinkSync(rec);
      // Looked at a moment ago: the next look is SINK_LOOK_MS away, but the close looks before it lets go.
      expect(sink.filePlacement?.()).toBe("in_place");
      await sink.close();
      expect(lines).toHaveLength(1);
      expect(lines[0]).toStartWith("warn the sink file was removed:");
      expect(lines[0]).toContain(JSON.stringify({ sink: rec }));
      expect(sink.filePlacement?.()).toBe("removed");
    });
  }

  test("only a regular file is looked at: a FIFO sink and a sink on a device have no look, a FIFO removed not being the recording's file", async () => {
    const t = socketDir(defer, "sfw-");
    const fifo = makeFifo(t.path("play"));
    const { lines, report } = reportLines();
    const file = openSink("wire", t.path("rec"), { preSkip: 312, pageMs: 20, report });
    const others = [openSink("ogg", fifo, { preSkip: 312, pageMs: 20, fifoReaders: report, report }), openSink("wire", "/dev/null", { preSkip: 312, pageMs: 20, report })];
    unlinkSync(fifo);
    for (const sink of [file, ...others]) sink.write(frame(0));
    expect([file, ...others].map((sink) => sink.filePlacement?.())).toEqual(["in_place", undefined, undefined]);
    for (const sink of [file, ...others]) await sink.close();
    expect(lines.filter((line) => line.includes("sink file"))).toEqual([]);
  });
});
