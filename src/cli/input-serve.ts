import { InputServer } from "../channels/input-server.ts";
import type { RoleSettings } from "../config.ts";
import type { Logger } from "../observe/logger.ts";
import { EXIT_OK } from "./errors.ts";
import { flushPeriodically, openSink } from "./media-open.ts";
import { MessageType } from "../protocol/index.ts";
import type { Shutdown } from "./shutdown.ts";
import { Telemetry } from "./telemetry.ts";

/**
 * `input serve`: input server -> sink. Sessions follow one another: Stop (or
 * a disconnect) ends one, the sink is flushed, the next client is served;
 * with --once the first session's end ends the run.
 */
export async function inputServe(
  settings: RoleSettings<"input serve">,
  logger: Logger,
  shutdown: Shutdown,
): Promise<number> {
  const report = logger.for("input-server");
  const sink = openSink(settings.format, settings.sink, { preSkip: settings["pre-skip"], pageMs: settings["page-ms"] });
  let finish!: (error?: Error) => void;
  const finished = new Promise<void>((resolve, reject) => (finish = (e) => (e ? reject(e) : resolve())));
  let telemetry!: Telemetry;
  const server = new InputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report,
    onClient: (socket) => telemetry.onSocket(socket),
    onFrameAge: (ms) => telemetry.frameAge(ms),
    onMessage: (message) => {
      sink.write(message);
      const tap = telemetry.frameTap;
      if (tap && message.type === MessageType.OpusFrame) tap(message.payload, message.timestampMs);
    },
    onSessionEnd: (reason, clean) => {
      telemetry.connectionEvent("disconnected", clean ? "Stop" : reason);
      sink.flush();
      report("info", clean ? "session ended by Stop" : "session ended without Stop", { reason });
      if (settings.once) finish();
    },
    onFailure: (error) => finish(error),
  });
  telemetry = await Telemetry.create({
    role: "input serve",
    channel: "input",
    direction: "receive",
    settings,
    logger,
    read: () => ({
      frames: server.framesReceived,
      bytes: server.bytesReceived,
      dropped: {},
      connectionDrops: server.listener.connectionDrops,
      reconnects: Math.max(0, server.listener.connections - 1),
      queueDepth: 0,
      queueCapacity: 0,
      connected: server.connected,
      lastFrameUnixMs: server.lastFrameUnixMs,
      protocolErrors: server.protocolErrors,
    }),
  });
  await server.listen();
  await telemetry.start(() => ({
    connected: server.connected,
    frames: server.framesReceived,
    drops: 0,
    sessions: server.sessions,
    config: server.config,
  }));
  const stopFlushing = flushPeriodically(sink, settings["page-ms"], (error) => finish(error));
  try {
    await shutdown.race(finished);
  } finally {
    stopFlushing();
    await server.stop();
    await telemetry.stop();
    try {
      // Completes the file (an Ogg sink: its end-of-stream page); on a full disk this throws.
      sink.close();
    } finally {
      report("info", "stopped", {
        signal: shutdown.signal,
        frames: server.framesReceived,
        heartbeats: server.heartbeats,
        sessions: server.sessions,
        clean_sessions: server.cleanSessions,
        protocol_errors: server.protocolErrors,
      });
    }
  }
  return EXIT_OK;
}
