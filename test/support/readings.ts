/**
 * Still figures for what reads a channel (the metrics, the monitor) when the
 * test is about the reader, not the channel: nothing happened yet.
 */
import type { ChannelFigures } from "../../src/observe/monitor/hub.ts";
import type { ChannelReadings } from "../../src/observe/readings.ts";

/** An output sender's readings before its first client (no frames, kernel sizes unknown), with `changes` on top. */
export function idleSenderReadings(changes: Partial<ChannelReadings> = {}): ChannelReadings {
  return {
    channel: "output",
    direction: "send",
    connected: false,
    frames: 0,
    bytes: 0,
    submitted: 0,
    delivered: 0,
    dropped: {},
    connects: 0,
    connectionDrops: 0,
    protocolErrors: 0,
    queueDepth: 0,
    inHand: 0,
    queueCapacity: 0,
    queueAllocatedBytes: 0,
    lastFrameUnixMs: 0,
    writeCalls: 0,
    shortWrites: 0,
    socketBuffers: {
      requested: { sendBytes: 0, receiveBytes: 0 },
      kernel: { sendBytes: 0, receiveBytes: 0 },
      sendQueueBytes: 0,
      receiveQueueBytes: 0,
      failures: {},
    },
    counts: {},
    ...changes,
  };
}

/** A monitor's figures that never move, with `changes` on top. */
export function stillFigures(changes: Partial<ChannelFigures> = {}): ChannelFigures {
  return {
    connected: false,
    frames: 0,
    bytes: 0,
    dropped: {},
    queueDepth: 0,
    queueCapacity: 0,
    sendUtilization: 0,
    receiveUtilization: 0,
    sendBufferBytes: 0,
    receiveBufferBytes: 0,
    latency: {},
    adaptiveLevel: 0,
    counts: {},
    ...changes,
  };
}
