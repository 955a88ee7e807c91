/**
 * SinkFlusher: data reaches the sink's file at most --page-ms after it was
 * written, and a steady stream is flushed on its own writes rather than by a
 * timer waking the process.
 */
import { describe, expect, test } from "bun:test";
import type { FrameSink } from "../../src/media/frame-sink.ts";
import { SinkFlusher } from "../../src/media/sink-flusher.ts";
import { readFileSync } from "node:fs";
import { OggSink } from "../../src/media/ogg-sink.ts";
import { encodeMessage, FrameParser, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { pagesOf } from "../support/ogg.ts";
import { tempDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

/** A sink that counts what is written and what has been flushed. */
function countingSink(failAt = Infinity) {
  const sink = {
    name: "counting",
    written: 0,
    flushed: 0,
    flushes: 0,
    write() {
      sink.written++;
    },
    flush() {
      if (++sink.flushes >= failAt) throw new Error("ENOSPC");
      sink.flushed = sink.written;
    },
    close() {},
  };
  return sink satisfies FrameSink;
}

describe("SinkFlusher", () => {
  test("a lone write is flushed by the timer, once", async () => {
    const sink = countingSink();
    const flusher = new SinkFlusher(sink, 30, (e) => {
      throw e;
    });
    sink.write();
    flusher.wrote();
    expect(sink.flushes).toBe(0);
    await until(() => sink.flushed === 1, "the write flushed");
    await Bun.sleep(100);
    expect(sink.flushes).toBe(1);
    flusher.stop();
  });

  test("a steady stream: never more than one flush per interval, nothing left unflushed after a pause", async () => {
    const sink = countingSink();
    const flusher = new SinkFlusher(sink, 40, (e) => {
      throw e;
    });
    const started = performance.now();
    for (let i = 0; i < 40; i++) {
      sink.write();
      flusher.wrote();
      await Bun.sleep(5);
    }
    const elapsed = performance.now() - started;
    // A flush needs 40 ms since the last one, however fast or slow the loop ran.
    expect(sink.flushes).toBeLessThanOrEqual(Math.floor(elapsed / 40) + 1);
    expect(sink.flushes).toBeGreaterThanOrEqual(1);
    await until(() => sink.flushed === 40, "everything flushed after the stream paused");
    flusher.stop();
  });

  test("through a real Ogg sink: audio reaches the file at most --page-ms after it was written, page by page, while frames flow", () => {
    const { path, cleanup } = tempDir("aa-flush-");
    try {
      const file = path("out.opus");
      const pageMs = 100;
      const sink = OggSink.open(file, { pageMs, serial: 1 });
      // A clock the test steps a frame at a time: counts, not timings, are what is checked.
      let now = 0;
      const flusher = new SinkFlusher(sink, pageMs, (e) => {
        throw e;
      }, () => now);
      const frame = new Uint8Array(60).fill(7);
      frame[0] = 0xfc; // a 20 ms stereo CELT packet (TOC config 31, code 0)
      const parser = new FrameParser(INPUT_MAGIC);
      const lags: number[] = [];
      for (let i = 1; i <= 50; i++) {
        now += 20;
        parser.push(encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, frame, 1n));
        sink.write(parser.next()!);
        flusher.wrote();
        const onDisk = pagesOf(new Uint8Array(readFileSync(file)));
        const samples = onDisk.length > 2 ? onDisk.at(-1)!.granule : 0;
        lags.push(i * 20 - samples / 48);
      }
      flusher.stop();
      // Flushed on the write that comes --page-ms after the last flush: never more than a page behind.
      expect(Math.max(...lags)).toBeLessThan(pageMs);
      expect(lags.filter((lag) => lag === 0).length).toBe(50 / (pageMs / 20));
      sink.close();
      // Every flush closed one page of 100 ms: 10 audio pages after OpusHead and OpusTags, and the EOS page.
      expect(pagesOf(new Uint8Array(readFileSync(file))).length).toBe(2 + 10 + 1);
    } finally {
      cleanup();
    }
  });

  test("a failing flush is reported once and stops the flusher", async () => {
    const sink = countingSink(1);
    const errors: Error[] = [];
    const flusher = new SinkFlusher(sink, 10, (e) => errors.push(e));
    sink.write();
    flusher.wrote();
    await until(() => errors.length === 1, "the failure reported");
    sink.write();
    flusher.wrote();
    await Bun.sleep(50);
    expect(errors.map((e) => e.message)).toEqual(["ENOSPC"]);
    expect(sink.flushes).toBe(1);
  });

  test("stop() cancels a pending flush", async () => {
    const sink = countingSink();
    const flusher = new SinkFlusher(sink, 20, (e) => {
      throw e;
    });
    sink.write();
    flusher.wrote();
    flusher.stop();
    await Bun.sleep(60);
    expect(sink.flushes).toBe(0);
  });
});
