/**
 * RFC 7845 section 3 (Packet Organization): "The first audio data page could have the 'continued
 * packet' flag set (indicating the first audio data packet is continued from a previous page) if,
 * for example, it was a live stream joined mid-broadcast, with the headers pasted on the front."
 * A demuxer then MUST NOT decode that first, partial packet, and reads on from the next. Such a file
 * is valid: oggz-validate accepts it, opusdec and ffmpeg decode it. `output serve --format ogg`
 * (strict, and --lenient too) refuses it instead: "page continues a packet that never began".
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import { concatBytes } from "../support/bytes.ts";
import { logFields } from "../support/agent-log.ts";
import { collectingWriter, packetsOf, pagesOf, sealPage } from "../support/ogg.ts";
import { decodedSamples, encodeWith, expectOggzValid, ffmpegPackets } from "../support/opus-fixtures.ts";
import { spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { tempDir } from "../support/temp.ts";
import { wireFileFrames } from "../support/wire.ts";

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir("aa-ogg-joined-");
});
afterAll(() => tmp?.cleanup());
afterEach(stopAgents);

/**
 * An opusenc file whose audio packets are laid on pages of one lacing value each (every packet of
 * 255 bytes or more spans pages, as a live muxer with small pages writes them), joined
 * mid-broadcast: its own OpusHead and OpusTags pages, then the pages from one that begins with
 * the rest of a packet on, numbered from `numberedFrom` (on from the headers, 2, or on from the
 * broadcast's own numbering). Returns the file and the audio packets a
 * demuxer reads from it: those that begin on its pages.
 */
function joinedMidBroadcast(bitrate = "128", spanning = false, numberedFrom = 2): { path: string; packets: Uint8Array[]; samples: number; cutOffset: number } {
  const original = new Uint8Array(readFileSync(encodeWith(tmp.dir, `live${bitrate}`, ["--framesize", "20", "--bitrate", bitrate], { channels: 2, samples: 48000 })));
  const info = pagesOf(original);
  const headers = info.slice(0, 2).map((p) => original.slice(p.offset, p.offset + p.size));
  const audio = packetsOf(original).slice(2);
  const { writer, pages } = collectingWriter(info[0]!.serial, { maxSegments: 1 });
  writer.sequence = 2;
  let granule = 0;
  for (const packet of audio) {
    granule += opusPacketSamples(packet);
    writer.addPacket(packet, granule);
  }
  writer.flushPage(true);
  // The tenth audio page or later that continues a packet: where the listener came in.
  // Spanning: one that goes on into the next page too (its one lacing value 255).
  const cut = pages.findIndex((page, k) => k >= 10 && (page[5]! & 0x01) !== 0 && (!spanning || page[27] === 255));
  expect(cut).toBeGreaterThan(0);
  const kept = pages.slice(cut).map((page, k) => {
    const copy = page.slice();
    new DataView(copy.buffer).setUint32(18, numberedFrom + k, true);
    sealPage(copy);
    return copy;
  });
  const path = join(tmp.dir, `joined${bitrate}${spanning}${numberedFrom}.opus`);
  writeFileSync(path, concatBytes([...headers, ...kept]));
  // Packets ending on the kept pages (a lacing value below 255), less the first: the partial one.
  const ends = pagesOf(concatBytes(kept)).reduce((n, page) => n + page.table.filter((lacing) => lacing < 255).length, 0);
  const read = audio.slice(audio.length - (ends - 1));
  const cutOffset = headers.reduce((n, h) => n + h.length, 0);
  return { path, packets: read, samples: read.reduce((n, p) => n + opusPacketSamples(p), 0), cutOffset };
}

/** `output serve --format ogg` of `path` (with `flags`) to one `output recv --once`, both ended 0: the server, and the client's wire capture. */
async function servedOnce(path: string, flags: string[], name: string): Promise<{ server: Spawned; capture: string }> {
  const socket = join(tmp.dir, `${name}.sock`);
  const capture = join(tmp.dir, `${name}.wire`);
  const server = spawnAgent(["output", "serve", "--socket", socket, "--source", path, "--format", "ogg", ...flags]);
  const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", capture, "--once"]);
  expect(await client.exited, client.stderr).toBe(0);
  expect(await server.exited, server.stderr).toBe(0);
  return { server, capture };
}

describe("an Ogg Opus file joined mid-broadcast (first audio page continued, RFC 7845 section 3)", () => {
  test("standard tools accept it; output serve --format ogg sends every packet that begins on its pages, skipping the partial first one, and exits 0", async () => {
    const joined = joinedMidBroadcast();

    // A valid file: liboggz validates it, ffmpeg's demuxer reads the same packets, opusdec decodes them.
    expectOggzValid(joined.path);
    expect(ffmpegPackets(joined.path).map((p) => p.size)).toEqual(joined.packets.map((p) => p.length));
    expect(decodedSamples(joined.path, tmp.dir)).toBeGreaterThan(0);

    for (const lenient of [[], ["--lenient"]]) {
      const { server, capture } = await servedOnce(joined.path, lenient, `joined${lenient.length}`);
      const received = wireFileFrames(capture).frames;
      expect(received.length).toBe(joined.packets.length);
      received.forEach((frame, i) => expect(frame).toEqual(joined.packets[i]!));
    }
  }, 60_000);

  test("its audio pages numbered on from the broadcast (a jump after the headers): read as the join it is, strict and --lenient, nothing counted missing", async () => {
    const joined = joinedMidBroadcast("128", false, 5000);
    expect(pagesOf(new Uint8Array(readFileSync(joined.path)))[2]!.sequence).toBe(5000);
    for (const lenient of [[], ["--lenient"]]) {
      const { server, capture } = await servedOnce(joined.path, lenient, `jump${lenient.length}`);
      expect(wireFileFrames(capture).frames).toEqual(joined.packets);
      expect(server.stderr).toContain("audio pages numbered on from a broadcast joined mid-way");
      expect(logFields(server.stderr, "output-server", "stopped")).toMatchObject({ source_missing_pages: "0", source_skipped_pages: "0" });
    }
  }, 60_000);

  test("the dropped partial packet is told once, at the first audio page's offset, though the partial packet spans several pages", async () => {
    const joined = joinedMidBroadcast("320", true);
    expect(pagesOf(new Uint8Array(readFileSync(joined.path)))[2]!.table).toEqual([255]);
    const told = (stderr: string) => stderr.split("\n").filter((line) => line.includes("dropped the end of a packet begun before this page"));
    for (const lenient of [[], ["--lenient"]]) {
      const { server, capture } = await servedOnce(joined.path, lenient, `told${lenient.length}`);
      expect(wireFileFrames(capture).frames).toEqual(joined.packets);
      const lines = told(server.stderr);
      expect(lines.length, server.stderr).toBe(1);
      expect(lines[0]).toContain(`offset=${joined.cutOffset}`);
    }
  }, 60_000);
});
