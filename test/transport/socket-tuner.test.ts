/**
 * SocketTuner on real Unix sockets: the sizes it promises are applied to
 * every connection and read back, a resize reaches the live connection, the
 * queues are sampled, and failures are counted and reported, never thrown.
 */
import { describe, expect, test } from "bun:test";
import { getSocketBuffers } from "../../src/transport/socket-options.ts";
import { SocketTuner } from "../../src/transport/socket-tuner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { unixPair } from "../support/peer.ts";
import { kernelBufferBytes } from "../support/proc.ts";
import { recordingReport } from "../support/reports.ts";

const defer = useCleanup();

const KiB = 1024;
const NOTHING_QUEUED = { sendQueueBytes: 0, receiveQueueBytes: 0 };

describe("SocketTuner", () => {
  test("before any connection it holds zeros: sampling does nothing, a resize is remembered", () => {
    const { reports, report } = recordingReport();
    const tuner = new SocketTuner({ sendBytes: 64 * KiB, receiveBytes: 64 * KiB }, report);
    tuner.sample();
    tuner.resize({ sendBytes: 96 * KiB, receiveBytes: 96 * KiB }); // only remembered, for the first connection
    expect(tuner.readings()).toEqual({
      requested: { sendBytes: 96 * KiB, receiveBytes: 96 * KiB },
      kernel: { sendBytes: 0, receiveBytes: 0 },
      ...NOTHING_QUEUED,
      failures: {},
    });
    expect(reports).toEqual([]);
  });

  test("attach applies the requested sizes and reads back what the kernel holds; logged at debug", async () => {
    const { client } = await unixPair(defer);
    const { reports, report } = recordingReport();
    const tuner = new SocketTuner({ sendBytes: 48 * KiB, receiveBytes: 96 * KiB }, report);
    tuner.attach(client);
    const kernel = { sendBytes: kernelBufferBytes(48 * KiB, "send"), receiveBytes: kernelBufferBytes(96 * KiB, "receive") };
    expect(tuner.readings()).toEqual({ requested: { sendBytes: 48 * KiB, receiveBytes: 96 * KiB }, kernel, ...NOTHING_QUEUED, failures: {} });
    const held = getSocketBuffers(client.fd);
    expect(held.ok && { sendBytes: held.sendBytes, receiveBytes: held.receiveBytes }).toEqual(kernel);
    expect(reports).toEqual([
      { level: "debug", message: "socket buffers", fields: { requested: { sendBytes: 48 * KiB, receiveBytes: 96 * KiB }, kernel } },
    ]);
  });

  test("without sizes the kernel's defaults stay, and are read back", async () => {
    const { client } = await unixPair(defer);
    const before = getSocketBuffers(client.fd);
    const tuner = new SocketTuner(undefined, recordingReport().report);
    tuner.attach(client);
    expect(before.ok && tuner.readings().kernel).toEqual(before.ok && { sendBytes: before.sendBytes, receiveBytes: before.receiveBytes });
    expect(tuner.readings().requested).toEqual({ sendBytes: 0, receiveBytes: 0 });
  });

  test("resize reaches the live connection at once, and later connections", async () => {
    const first = await unixPair(defer);
    const tuner = new SocketTuner({ sendBytes: 32 * KiB, receiveBytes: 32 * KiB }, recordingReport().report);
    tuner.attach(first.client);
    tuner.resize({ sendBytes: 200 * KiB, receiveBytes: 100 * KiB });
    const resized = { sendBytes: kernelBufferBytes(200 * KiB, "send"), receiveBytes: kernelBufferBytes(100 * KiB, "receive") };
    const held = getSocketBuffers(first.client.fd);
    expect(held.ok && { sendBytes: held.sendBytes, receiveBytes: held.receiveBytes }).toEqual(resized);
    expect(tuner.readings().kernel).toEqual(resized);

    const second = await unixPair(defer);
    tuner.attach(second.client);
    const next = getSocketBuffers(second.client.fd);
    expect(next.ok && { sendBytes: next.sendBytes, receiveBytes: next.receiveBytes }).toEqual(resized);
  });

  test("sample reads the bytes the peer has not read yet, and what waits to be read", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    const sender = new SocketTuner(undefined, recordingReport().report);
    const receiver = new SocketTuner(undefined, recordingReport().report);
    sender.attach(pair.client);
    receiver.attach(pair.server);
    const written = pair.client.write(new Uint8Array(10_000));
    expect(written).toBe(10_000);
    sender.sample();
    receiver.sample();
    // The sending side counts buffer memory (with overhead), the receiving side exactly the bytes.
    expect(sender.readings().sendQueueBytes).toBeGreaterThanOrEqual(10_000);
    expect(sender.readings().receiveQueueBytes).toBe(0);
    expect(receiver.readings().receiveQueueBytes).toBe(10_000);
    expect(receiver.readings().sendQueueBytes).toBe(0);
  });

  test("once the connection is closed, sampling finds nothing queued (not the dead socket's last figures), and nothing fails", async () => {
    const pair = await unixPair(defer, { pauseServer: true });
    const receiver = new SocketTuner(undefined, recordingReport().report);
    receiver.attach(pair.server);
    pair.client.write(new Uint8Array(500));
    receiver.sample();
    expect(receiver.readings().receiveQueueBytes).toBe(500);
    pair.server.terminate();
    receiver.sample();
    receiver.resize({ sendBytes: 64 * KiB, receiveBytes: 64 * KiB });
    expect(receiver.readings().receiveQueueBytes).toBe(0);
    expect(receiver.readings().failures).toEqual({});
  });

  test("a connection already closed when attached is left alone: no call, no failure", async () => {
    const pair = await unixPair(defer);
    pair.client.terminate();
    const { reports, report } = recordingReport();
    const tuner = new SocketTuner({ sendBytes: 64 * KiB, receiveBytes: 64 * KiB }, report);
    tuner.attach(pair.client);
    expect(tuner.readings().kernel).toEqual({ sendBytes: 0, receiveBytes: 0 });
    expect(tuner.readings().failures).toEqual({});
    expect(reports).toEqual([]);
  });

  test("a size the kernel call refuses is counted per connection and reported; the kernel's sizes stay", async () => {
    const { reports, report } = recordingReport();
    const tuner = new SocketTuner({ sendBytes: 0, receiveBytes: 64 * KiB }, report);
    for (let n = 1; n <= 2; n++) {
      const { client } = await unixPair(defer);
      const before = getSocketBuffers(client.fd);
      tuner.attach(client);
      expect(tuner.readings().failures).toEqual({ "setsockopt(SO_SNDBUF)": n });
      expect(before.ok && tuner.readings().kernel).toEqual(before.ok && { sendBytes: before.sendBytes, receiveBytes: before.receiveBytes });
    }
    const warnings = reports.filter((r) => r.level === "warn");
    expect(warnings.map((r) => r.message)).toEqual(["could not set socket buffers; kernel defaults stay", "could not set socket buffers; kernel defaults stay"]);
    expect(String(warnings[0]!.fields!.error)).toContain("size must be a positive int, got 0");
  });
});
