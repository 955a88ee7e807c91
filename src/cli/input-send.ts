import { InputClient } from "../channels/input-client.ts";
import type { RoleSettings } from "../config.ts";
import type { FrameSource, SourceFrame } from "../media/frame-source.ts";
import { Pacer } from "../media/pacer.ts";
import type { Logger } from "../observe/logger.ts";
import { DEFAULT_AUDIO_CONFIG, wallClockMs, type AudioConfig } from "../protocol/index.ts";
import { EXIT_OK } from "./errors.ts";
import { isLiveSource, openSource } from "./media-open.ts";
import type { Shutdown } from "./shutdown.ts";
import { pumpSource } from "./source-pump.ts";
import { Telemetry } from "./telemetry.ts";
import { within } from "../transport/within.ts";

/** Bound on writing out what is queued, and the Stop, after a signal. */
const FINAL_FLUSH_MS = 1000;

/**
 * `input send`: source -> input client. Config comes from the flags, else the
 * source's OpusHead, else 48000/2/960. A file source without --realtime is
 * lossless (waits for the server and for queue room); the run ends with Stop.
 */
export async function inputSend(
  settings: RoleSettings<"input send">,
  logger: Logger,
  shutdown: Shutdown,
): Promise<number> {
  const report = logger.for("input-client");
  const live = settings.realtime || (await isLiveSource(settings.source));
  // Opening a FIFO waits for its writer (the encoder): a signal must still end the wait.
  const opened = await shutdown.race(openSource(settings.format, settings.source, { lenient: settings.lenient }));
  if (!opened) return EXIT_OK;
  // An Ogg source knows its channels and rate only once the OpusHead packet is parsed, and its
  // frame size once the first audio packet is: read up to that packet before building the Config.
  const source = settings.format === "ogg" ? await withFirstFrameRead(opened) : opened;
  const config: AudioConfig = {
    sampleRate: settings["sample-rate"] ?? source.audioConfig?.sampleRate ?? DEFAULT_AUDIO_CONFIG.sampleRate,
    channels: settings.channels ?? source.audioConfig?.channels ?? DEFAULT_AUDIO_CONFIG.channels,
    frameSize: settings["frame-size"] ?? source.audioConfig?.frameSize ?? DEFAULT_AUDIO_CONFIG.frameSize,
  };
  let telemetry!: Telemetry;
  const client: InputClient = new InputClient({
    path: settings.socket,
    report,
    config,
    heartbeatMs: settings["heartbeat-ms"],
    ackTimeoutMs: settings["ack-timeout-ms"],
    connectTimeoutMs: settings["connect-timeout"] === undefined ? undefined : settings["connect-timeout"] * 1000,
    queueFrames: settings["queue-frames"],
    dropPolicy: settings.drop,
    lossless: !live,
    writeDeadlineMs: settings["write-deadline-ms"],
    stuckFrames: settings["stuck-frames"],
    onConnect: (socket) => telemetry.onSocket(socket),
    onDisconnect: (reason) => telemetry.connectionEvent("disconnected", reason),
    onShortWrite: (socket) => telemetry.onShortWrite(socket),
    onWritten: (...args) => telemetry.onWritten(...args),
    onRoundTrip: (ms) => telemetry.roundTrip(ms),
  });
  const stats = client.stats;
  telemetry = await Telemetry.create({
    role: "input send",
    channel: "input",
    direction: "send",
    settings,
    logger,
    queue: client.queue,
    read: () => ({
      frames: stats.framesDelivered,
      bytes: stats.deliveredBytes,
      dropped: stats.dropped,
      connectionDrops: client.connectionDrops,
      reconnects: Math.max(0, client.connects - 1),
      queueDepth: client.queue.length,
      queueCapacity: client.queue.capacity,
      connected: client.connected,
      lastFrameUnixMs: client.lastFrameUnixMs,
      protocolErrors: client.protocolErrors,
    }),
  });
  await telemetry.start(() => ({
    connected: client.connected,
    frames: stats.framesDelivered,
    drops: stats.droppedTotal,
    dropped: stats.dropped,
    acks: client.acks,
  }));
  const connection = client.start();
  // A source that fails part-way still ends the run with an error, but only after the
  // frames read before the failure went out and the session ended with Stop.
  let sourceFailure: unknown;
  try {
    const sending = (async () => {
      if (!live) await client.waitForConnection();
      const pumped = pumpSource(
        source,
        {
          submit: (payload) => {
            const tap = telemetry.frameTap;
            if (tap) tap(payload, wallClockMs());
            return client.sendFrame(payload);
          },
          hasSpace: () => !client.queue.isFull,
          waitForSpace: () => client.writer.waitForSpace(),
        },
        {
          lossless: !live,
          pacer: settings.realtime ? new Pacer() : undefined,
          loop: settings.loop,
          isStopped: () => shutdown.isRequested,
        },
      );
      await pumped.catch((e) => void (sourceFailure = e ?? new Error("source failed")));
      // After a signal the Stop is sent below, once; a Stop queued here too would go
      // after the final discard, neither delivered nor counted as dropped.
      if (!shutdown.isRequested) await client.finish();
    })();
    // A connect timeout rejects `connection`; otherwise the run ends when sending does.
    await shutdown.race(Promise.race([sending, connection.then(() => sending)]));
    // A signal stops the source mid-stream, but the session still ends with Stop (bounded wait).
    if (shutdown.isRequested && client.connected) await within(client.finish(), FINAL_FLUSH_MS, undefined);
    if (sourceFailure !== undefined) throw sourceFailure;
  } finally {
    client.stop();
    await telemetry.stop();
    await source.close();
    report("info", "stopped", {
      signal: shutdown.signal,
      ...client.stats.toFields(),
      acks: client.acks,
      ack_timeouts: client.ackTimeouts,
      connects: client.connects,
    });
  }
  return EXIT_OK;
}

/**
 * Reads `source` up to its first frame (parsing any header on the way), and
 * returns a source that yields that frame first, then the rest.
 */
async function withFirstFrameRead(source: FrameSource): Promise<FrameSource> {
  let first: SourceFrame | undefined;
  for (;;) {
    const frame = source.next();
    if (frame) {
      first = { payload: frame.payload.slice(), timeMs: frame.timeMs };
      break;
    }
    if (!(await source.fill())) break;
  }
  return {
    get name() {
      return source.name;
    },
    get audioConfig() {
      return source.audioConfig;
    },
    get preSkip() {
      return source.preSkip;
    },
    next() {
      if (!first) return source.next();
      const frame = first;
      first = undefined;
      return frame;
    },
    fill: () => source.fill(),
    rewind: () => source.rewind(),
    close: () => source.close(),
  };
}
