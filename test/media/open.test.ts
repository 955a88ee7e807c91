/** Opening sources: which are live streams, and a source read up to its first frame that still yields every frame. */
import { describe, expect, test } from "bun:test";
import { openByteSource } from "../../src/media/byte-source.ts";
import { isLiveSource, openSource, readUpToFirstFrame } from "../../src/media/open.ts";
import { useCleanup } from "../support/cleanup.ts";
import { payloadIndex } from "../support/payloads.ts";
import { buildStream } from "../support/ogg.ts";
import { openFiles } from "../support/proc.ts";
import { drain } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire } from "../support/wire.ts";

const defer = useCleanup();

describe("isLiveSource", () => {
  test("stdin and a FIFO are live, a regular file is not", async () => {
    const dir = socketDir(defer, "open-");
    await Bun.write(dir.path("in.wire"), indexedWire(0, 1));
    expect(Bun.spawnSync(["mkfifo", dir.path("in.fifo")]).exitCode).toBe(0);
    expect(await isLiveSource("-")).toBe(true);
    expect(await isLiveSource(dir.path("in.fifo"))).toBe(true);
    expect(await isLiveSource(dir.path("in.wire"))).toBe(false);
  });
});

describe("openSource", () => {
  test("a directory is refused, naming it, and leaves nothing open", async () => {
    const dir = socketDir(defer, "open-");
    const error = await openSource("wire", dir.dir, { lenient: false, report: () => {} }).catch((e) => e);
    expect(error).toMatchObject({ message: `source ${dir.dir} is a directory, expected a file or "-"`, code: "EISDIR", path: dir.dir });
    expect(openFiles(process.pid)).not.toContain(dir.dir);
  });
});

describe("a device as a source", () => {
  /** Opens `path` as a source, pulls it to its end (or its error) and closes it. */
  async function drained(format: "wire" | "ogg", path: string) {
    const source = await openSource(format, path, { lenient: false, report: () => {} });
    try {
      return await drain(source);
    } finally {
      await source.close();
    }
  }

  test("one that cannot be polled (/dev/null) reads as empty input, like an empty file", async () => {
    expect(await drained("wire", "/dev/null")).toEqual({ frames: [] });
    const ogg = await drained("ogg", "/dev/null");
    expect(ogg.frames).toEqual([]);
    expect(ogg.error?.message).toBe("ogg source /dev/null is not an Ogg Opus stream: it holds no OpusHead");
  });

  test("one that never ends (/dev/zero) is read until its bytes prove it is not the format", async () => {
    const ogg = await drained("ogg", "/dev/zero");
    expect(ogg.error?.message).toBe('ogg source /dev/zero: no Ogg capture pattern "OggS" at byte 0');
  });
});

describe("a source read through the thread pool", () => {
  test("a file too large to hold can be started again; a device cannot; each holds its file open until closed", async () => {
    const dir = socketDir(defer, "open-");
    const large = dir.path("large.bin");
    await Bun.write(large, new Uint8Array(1536 * 1024).fill(7));
    for (const [path, rewindable] of [[large, true], ["/dev/zero", false]] as const) {
      const source = await openByteSource(path);
      expect({ path, rewindable: source.rewindable, replaysSameBytes: source.replaysSameBytes }).toEqual({ path, rewindable, replaysSameBytes: false });
      const first = await source.read();
      expect(first!.length).toBeGreaterThan(0);
      if (rewindable) {
        source.rewind();
        expect((await source.read())!.slice(0, 4)).toEqual(Uint8Array.of(7, 7, 7, 7));
      } else expect(() => source.rewind()).toThrow(`${path} cannot be rewound`);
      expect(openFiles(process.pid)).toContain(path);
      await source.close();
      expect(openFiles(process.pid)).not.toContain(path);
    }
  });
});

describe("readUpToFirstFrame", () => {
  test("has read the first frame, yet yields it first and then every other frame once", async () => {
    const path = socketDir(defer, "open-").path("in.wire");
    await Bun.write(path, indexedWire(0, 5));
    const opened = await openSource("wire", path, { lenient: false, report: () => {} });
    defer(() => opened.close());
    const source = await readUpToFirstFrame(opened);
    expect(source.name).toBe(path);
    const { frames, error } = await drain(source);
    expect(error).toBeUndefined();
    expect(frames.map((f) => payloadIndex(f.payload))).toEqual([0, 1, 2, 3, 4]);
  });

  test("the first frame keeps its duration, as every other frame does (--realtime waits it out at a --loop restart)", async () => {
    const path = socketDir(defer, "open-").path("in.opus");
    // 60 ms SILK packets (TOC 0x18).
    await Bun.write(path, buildStream([Uint8Array.of(0x18, 1), Uint8Array.of(0x18, 2)], 1).bytes);
    const opened = await openSource("ogg", path, { lenient: false, report: () => {} });
    defer(() => opened.close());
    const { frames, error } = await drain(await readUpToFirstFrame(opened));
    expect(error).toBeUndefined();
    expect(frames.map((f) => [f.timeMs, f.durationMs])).toEqual([
      [0, 60],
      [60, 60],
    ]);
  });

  test("a source without frames yields none", async () => {
    const path = socketDir(defer, "open-").path("empty.wire");
    await Bun.write(path, new Uint8Array(0));
    const opened = await openSource("wire", path, { lenient: false, report: () => {} });
    defer(() => opened.close());
    expect(await drain(await readUpToFirstFrame(opened))).toEqual({ frames: [] });
  });
});
