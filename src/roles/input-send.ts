import { InputClient } from "../channels/input-client.ts";
import type { RoleSettings } from "../config.ts";
import { isLiveSource, openSource, readUpToFirstFrame } from "../media/open.ts";
import { Pacer } from "../media/pacer.ts";
import type { FrameSource } from "../media/frame-source.ts";
import { pumpSource, type PumpTarget } from "../media/pump.ts";
import type { Logger } from "../observe/logger.ts";
import { stoppedFields } from "../observe/readings.ts";
import { DEFAULT_AUDIO_CONFIG, type AudioConfig } from "../protocol/index.ts";
import { within } from "../io/within.ts";
import { Instruments } from "./instruments.ts";
import { FINAL_FLUSH_MS, senderOptions } from "./sender-options.ts";
import type { Shutdown } from "./shutdown.ts";

/**
 * `input send`: source -> input client. Config comes from the flags, else the
 * source's OpusHead, else 48000/2/960. A file source without --realtime is
 * lossless (waits for the server and for queue room); the run ends with Stop.
 */
export async function inputSend(settings: RoleSettings<"input send">, logger: Logger, shutdown: Shutdown): Promise<void> {
  const report = logger.for("input-client");
  const live = settings.realtime || (await isLiveSource(settings.source));
  const opened = await openSource(settings.format, settings.source, { lenient: settings.lenient, report: logger.for("source") });
  const client = new InputClient({
    path: settings.socket,
    report,
    config: configOf(settings, opened, DEFAULT_AUDIO_CONFIG),
    heartbeatMs: settings["heartbeat-ms"],
    ackTimeoutMs: settings["ack-timeout-ms"],
    connectTimeoutMs: settings["connect-timeout"] === undefined ? undefined : settings["connect-timeout"] * 1000,
    ...senderOptions(settings, live),
  });
  // What the source leaves out (an Ogg source's skipped pages) is counted with the client's readings.
  client.fedBy(opened);
  // Up before any wait for a first writer, so an operator sees the process waiting.
  const instruments = await Instruments.attach(client, { role: "input send", settings, logger });
  await instruments.start();
  shutdown.ready();
  // An Ogg source knows its channels and rate only once the OpusHead packet is parsed, and its
  // frame size once the first audio packet is: unless the flags give all three, read up to that
  // packet (from a FIFO: its first writer's) before connecting with the Config; a signal ends the wait.
  const configFromFlags = settings["sample-rate"] !== undefined && settings.channels !== undefined && settings["frame-size"] !== undefined;
  // Every way out, a source that fails before its first frame too: the run's log ends with its accounting.
  const stopped = () => report.last("stopped", { signal: shutdown.signal, ...stoppedFields(client.readings()), ...instruments.latencyFields() });
  try {
    let source: FrameSource | undefined;
    try {
      source = settings.format === "ogg" && !configFromFlags ? await shutdown.race(readUpToFirstFrame(opened)) : opened;
    } finally {
      // Stopped or failed before the first frame: nothing was sent, and the run says so as every run ends.
      if (!source) {
        await opened.close();
        stopped();
      }
    }
    if (!source) return;
    client.setConfig(configOf(settings, source, DEFAULT_AUDIO_CONFIG));
    const connection = client.start();
    // A source that fails part-way still ends the run with an error, but only after the
    // frames read before the failure went out and the session ended with Stop.
    let sourceFailure: unknown;
    try {
      const sending = (async () => {
        // Lossless waits for the server. Live starts once the first attempt is decided: frames
        // before it would be dropped as no_client although a server that is up is about to answer.
        await (live ? client.firstAttempt() : client.waitForConnection());
        const pumped = pumpSource(source, followingConfig(client, source, settings, live), {
          lossless: !live,
          pacer: settings.realtime ? new Pacer() : undefined,
          loop: settings.loop,
          isStopped: () => shutdown.isRequested,
        });
        await pumped.catch((e) => void (sourceFailure = e ?? new Error("source failed")));
        // After a signal the Stop is sent below, once; a Stop queued here too would go
        // after the final discard, neither delivered nor counted as dropped.
        if (!shutdown.isRequested) await client.finish();
      })();
      // A connect timeout rejects `connection`; otherwise the run ends when sending does.
      await shutdown.race(Promise.race([sending, connection.then(() => sending)]));
      if (shutdown.isRequested) {
        // A connect under way as the signal came is seen through: a server that accepted it gets a session like any other.
        await within(client.connectDecided(), FINAL_FLUSH_MS, undefined);
        // A signal stops the source mid-stream, but the session still ends with Stop (bounded wait).
        if (client.connected) await within(client.finish(), FINAL_FLUSH_MS, undefined);
      }
      if (sourceFailure !== undefined) throw sourceFailure;
    } finally {
      client.stop();
      await source.close();
      stopped();
    }
  } finally {
    // Every way out, the first writer's wait too: a monitor page is told the agent stops.
    await instruments.stop();
  }
}

/**
 * The Config of `source` as it is now: the flags, else what its stream says,
 * else `fallback`. The stream counts its frame size at its own rate: under a
 * rate the flags give, the same duration is counted at that rate.
 */
function configOf(settings: RoleSettings<"input send">, source: FrameSource, fallback: AudioConfig): AudioConfig {
  const stream = source.audioConfig;
  const sampleRate = settings["sample-rate"] ?? stream?.sampleRate ?? fallback.sampleRate;
  const streamFrameSize = stream?.frameSize === undefined ? undefined : (stream.frameSize * sampleRate) / (stream.sampleRate ?? sampleRate);
  return {
    sampleRate,
    channels: settings.channels ?? stream?.channels ?? fallback.channels,
    frameSize: settings["frame-size"] ?? streamFrameSize ?? fallback.frameSize,
  };
}

/**
 * The client as the pump's target, with the source's Config followed: when
 * the stream changes its audio (a FIFO's next writer, a chained Ogg stream),
 * the new Config goes out ahead of its first frame. Lossless, the queue
 * drains first, so that the Config never makes a frame drop.
 */
function followingConfig(client: InputClient, source: FrameSource, settings: RoleSettings<"input send">, live: boolean): PumpTarget {
  // Looked at again only when the source's stream or its frame size changes: not per frame.
  let seen = source.audioConfig;
  let seenFrameSize = seen?.frameSize;
  const changed = () => source.audioConfig !== seen || source.audioConfig?.frameSize !== seenFrameSize;
  return {
    sendFrame: (payload) => {
      if (changed()) {
        client.setConfig(configOf(settings, source, client.config));
        seen = source.audioConfig;
        seenFrameSize = seen?.frameSize;
      }
      return client.sendFrame(payload);
    },
    hasSpace: () => (!live && changed() ? client.idle : client.hasSpace()),
    waitForSpace: () => (!live && changed() ? client.waitForIdle() : client.waitForSpace()),
  };
}
