import { OutputClient } from "../channels/output-client.ts";
import type { RoleSettings } from "../config.ts";
import type { Logger } from "../observe/logger.ts";
import { MessageType, type ParsedMessage } from "../protocol/index.ts";
import { EXIT_OK } from "./errors.ts";
import { flushPeriodically, openSink } from "./media-open.ts";
import type { Shutdown } from "./shutdown.ts";
import { Telemetry } from "./telemetry.ts";

/**
 * The output client and its telemetry, wired as `output recv` runs them (the
 * benchmark's receiver too). `onMessage` gets every valid message; OpusFrames
 * are also passed to a listening monitor. Call `client.run()` to connect.
 */
export async function startOutputClient(
  settings: Parameters<typeof outputRecv>[0],
  logger: Logger,
  onMessage: (message: ParsedMessage) => void,
): Promise<{ client: OutputClient; telemetry: Telemetry }> {
  let telemetry!: Telemetry;
  const client: OutputClient = new OutputClient({
    path: settings.socket,
    report: logger.for("output-client"),
    connectTimeoutMs: settings["connect-timeout"] === undefined ? undefined : settings["connect-timeout"] * 1000,
    onConnect: (socket) => telemetry.onSocket(socket),
    onDisconnect: (reason) => telemetry.connectionEvent("disconnected", reason),
    onFrameAge: (ms) => telemetry.frameAge(ms),
    onMessage: (message) => {
      if (message.type === MessageType.OpusFrame) {
        const tap = telemetry.frameTap;
        if (tap) tap(message.payload, message.timestampMs);
      }
      onMessage(message);
    },
  });
  telemetry = await Telemetry.create({
    role: "output recv",
    channel: "output",
    direction: "receive",
    settings,
    logger,
    read: () => ({
      frames: client.framesReceived,
      bytes: client.bytesReceived,
      dropped: {},
      connectionDrops: client.connectionDrops,
      reconnects: Math.max(0, client.connects - 1),
      queueDepth: 0,
      queueCapacity: 0,
      connected: client.connected,
      lastFrameUnixMs: client.lastFrameUnixMs,
      protocolErrors: client.protocolErrors,
    }),
  });
  await telemetry.start(() => ({
    connected: client.connected,
    frames: client.framesReceived,
    drops: 0,
    protocol_errors: client.protocolErrors,
  }));
  return { client, telemetry };
}

/** `output recv`: output client -> sink, reconnecting whenever the server goes away. */
export async function outputRecv(
  settings: RoleSettings<"output recv">,
  logger: Logger,
  shutdown: Shutdown,
): Promise<number> {
  const report = logger.for("output-client");
  const sink = openSink(settings.format, settings.sink, { preSkip: settings["pre-skip"], pageMs: settings["page-ms"] });
  const limit = settings.count;
  let frames = 0;
  const { client, telemetry } = await startOutputClient(settings, logger, (message) => {
    sink.write(message);
    if (message.type === MessageType.OpusFrame && ++frames === limit) client.stop();
  });
  const stopFlushing = flushPeriodically(sink, settings["page-ms"], (error) => client.fail(error));
  try {
    await shutdown.race(client.run(settings.once));
  } finally {
    stopFlushing();
    client.stop();
    await telemetry.stop();
    try {
      // Completes the file (an Ogg sink: its end-of-stream page); on a full disk this throws.
      sink.close();
    } finally {
      report("info", "stopped", {
        signal: shutdown.signal,
        frames: client.framesReceived,
        other_messages: client.otherMessages,
        protocol_errors: client.protocolErrors,
        connects: client.connects,
      });
    }
  }
  return EXIT_OK;
}
