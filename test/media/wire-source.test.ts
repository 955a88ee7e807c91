/**
 * WireSource on real capture files: the payloads of OpusFrame messages, in
 * order, with their timestamps, whatever else the capture holds and wherever
 * the reads split it; either channel's magic; errors that name the source
 * and the byte offset; rewinding for --loop.
 */
import { describe, expect, test } from "bun:test";
import { WireSource } from "../../src/media/wire-source.ts";
import { encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { testPayload } from "../support/payloads.ts";
import { chunkedSource, drain } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { frameTimestampNs, wireBytes } from "../support/wire.ts";

const defer = useCleanup();

async function sourceOf(bytes: Uint8Array, name = "in.wire"): Promise<WireSource> {
  const path = socketDir(defer, "ws-").path(name);
  await Bun.write(path, bytes);
  const source = await WireSource.open(path);
  defer(() => source.close());
  return source;
}

describe("WireSource", () => {
  test("yields every OpusFrame payload in order with its time in ms, across read boundaries", async () => {
    // Over 64 KiB, so messages straddle the file reads.
    const N = 100;
    const source = await sourceOf(wireBytes(0, N));
    const { frames, error } = await drain(source);
    expect(error).toBeUndefined();
    expect(frames.length).toBe(N);
    expect(frames.every((f, i) => sameBytes(f.payload, testPayload(i)))).toBe(true);
    expect(frames.map((f) => f.timeMs)).toEqual([...Array(N).keys()].map((i) => Number(frameTimestampNs(i)) / 1e6));
  });

  test("each frame's duration is what its Opus TOC says it plays, none for a payload whose TOC cannot be valid (the wire carries any)", async () => {
    // TOC 0xfc: CELT 20 ms, one frame; 0x19: SILK 60 ms, two frames; 0x03 with a count of 0: no valid packet.
    const payloads = [Uint8Array.of(0xfc, 1, 2), Uint8Array.of(0x19, 1, 2), Uint8Array.of(0x03, 0x00)];
    const source = await sourceOf(concatBytes(payloads.map((p) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, p, 0n))));
    const { frames, error } = await drain(source);
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.durationMs)).toEqual([20, 120, undefined]);
  });

  test("an input capture whose first read brings fewer than 4 bytes (stdin, a FIFO) is still read as the input channel", async () => {
    const bytes = wireBytes(0, 3, testPayload, INPUT_MAGIC);
    for (const chunks of [[2, 65536], [1, 1, 1, 65536], [3, 2, 7]]) {
      const { frames, error } = await drain(WireSource.from(chunkedSource(bytes, chunks, "stdin")));
      expect({ chunks, error, frames: frames.map((f) => f.payload) }).toEqual({ chunks, error: undefined, frames: [0, 1, 2].map((i) => testPayload(i)) });
    }
    // Fewer than 4 bytes in all: a message cut short, as before.
    const short = await drain(WireSource.from(chunkedSource(bytes.subarray(0, 3), [1], "stdin")));
    expect(short.error?.message).toBe("wire source stdin: Truncated: stream ended 14 byte(s) short of a whole message at byte 0");
  });

  test("skips the other message types", async () => {
    const bytes = concatBytes([
      encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 })),
      wireBytes(0, 2, testPayload, INPUT_MAGIC),
      encodeMessage(INPUT_MAGIC, MessageType.Heartbeat),
      wireBytes(2, 3, testPayload, INPUT_MAGIC),
      encodeMessage(INPUT_MAGIC, MessageType.Stop),
    ]);
    const { frames, error } = await drain(await sourceOf(bytes));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual([0, 1, 2].map((i) => testPayload(i)));
  });

  test("takes the channel from the first magic: an output capture and an input capture both read", async () => {
    for (const magic of [OUTPUT_MAGIC, INPUT_MAGIC]) {
      const { frames, error } = await drain(await sourceOf(wireBytes(0, 3, testPayload, magic)));
      expect({ magic, error, frames: frames.length }).toEqual({ magic, error: undefined, frames: 3 });
    }
  });

  test("a capture cut inside a message fails at its end, naming the source and the offset; the frames before come out", async () => {
    const whole = wireBytes(0, 3);
    const cut = whole.subarray(0, whole.length - 5);
    const source = await sourceOf(cut, "cut.wire");
    const { frames, error } = await drain(source);
    expect(frames.length).toBe(2);
    const third = wireBytes(0, 2).length;
    expect(error?.message).toBe(`wire source ${source.name}: Truncated: stream ended 5 byte(s) short of a whole message at byte ${third}`);
  });

  test("a framing violation names the source", async () => {
    const bytes = concatBytes([wireBytes(0, 1), wireBytes(1, 2, testPayload, INPUT_MAGIC)]);
    const source = await sourceOf(bytes, "mixed.wire");
    const { frames, error } = await drain(source);
    expect(frames.length).toBe(1);
    expect(error?.message).toStartWith(`wire source ${source.name}: BadMagic: 0x4a4b4d49 ("JKMI")`);
  });

  test("an empty file has no frames and no error", async () => {
    const { frames, error } = await drain(await sourceOf(new Uint8Array(0)));
    expect({ frames, error }).toEqual({ frames: [], error: undefined });
  });

  test("at its end it stays ended; rewind starts a file again from the first frame", async () => {
    const source = await sourceOf(wireBytes(0, 3));
    expect((await drain(source)).frames.length).toBe(3);
    expect(await source.fill()).toBe(false);
    expect(source.next()).toBeUndefined();
    expect(source.rewind()).toBe(true);
    const again = await drain(source);
    expect(again.frames.map((f) => f.payload)).toEqual([0, 1, 2].map((i) => testPayload(i)));
  });

  test("a FIFO is read as a stream and cannot be rewound", async () => {
    const dir = socketDir(defer, "ws-");
    const [file, fifo] = [dir.path("in.wire"), dir.path("in.fifo")];
    await Bun.write(file, wireBytes(0, 2));
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const writer = Bun.spawn(["sh", "-c", 'cat "$0" > "$1"', file, fifo]);
    const source = await WireSource.open(fifo);
    defer(() => source.close());
    expect((await drain(source)).frames.length).toBe(2);
    expect(await writer.exited).toBe(0);
    expect(source.rewind()).toBe(false);
  });
});
