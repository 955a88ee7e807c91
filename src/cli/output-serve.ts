import { OutputServer } from "../channels/output-server.ts";
import { wallClockMs } from "../protocol/index.ts";
import type { RoleSettings } from "../config.ts";
import type { Logger } from "../observe/logger.ts";
import { Pacer } from "../media/pacer.ts";
import { EXIT_OK } from "./errors.ts";
import { isLiveSource, openSource } from "./media-open.ts";
import type { Shutdown } from "./shutdown.ts";
import { pumpSource } from "./source-pump.ts";
import { Telemetry } from "./telemetry.ts";

/** Bound on writing out queued frames at shutdown. */
const FINAL_FLUSH_MS = 1000;

/**
 * The output server and its telemetry, wired as `output serve` runs them, and
 * listening. The benchmark builds its sender with this too, so it measures
 * exactly what ships.
 */
export async function startOutputServer(
  settings: Parameters<typeof outputServe>[0],
  logger: Logger,
  live: boolean,
): Promise<{ server: OutputServer; telemetry: Telemetry }> {
  let telemetry!: Telemetry;
  const server = new OutputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report: logger.for("output-server"),
    queueFrames: settings["queue-frames"],
    dropPolicy: settings.drop,
    lossless: !live,
    writeDeadlineMs: settings["write-deadline-ms"],
    stuckFrames: settings["stuck-frames"],
    onClient: (socket) => telemetry.onSocket(socket),
    onClientGone: (reason) => telemetry.connectionEvent("disconnected", reason),
    onShortWrite: (socket) => telemetry.onShortWrite(socket),
    onWritten: (...args) => telemetry.onWritten(...args),
  });
  const stats = server.stats;
  telemetry = await Telemetry.create({
    role: "output serve",
    channel: "output",
    direction: "send",
    settings,
    logger,
    queue: server.queue,
    read: () => ({
      frames: stats.framesDelivered,
      bytes: stats.deliveredBytes,
      dropped: stats.dropped,
      connectionDrops: server.listener.connectionDrops,
      reconnects: Math.max(0, server.listener.connections - 1),
      queueDepth: server.queue.length,
      queueCapacity: server.queue.capacity,
      connected: server.connected,
      lastFrameUnixMs: stats.lastFrameUnixMs,
      protocolErrors: 0,
    }),
  });
  // Telemetry first, then listen: a client connecting at once finds every hook in place.
  await server.listen();
  await telemetry.start(() => ({
    connected: server.connected,
    frames: stats.framesDelivered,
    drops: stats.droppedTotal,
    dropped: stats.dropped,
    queue_depth: server.queue.length,
  }));
  return { server, telemetry };
}

/**
 * `output serve`: source -> output server. A file source without --realtime
 * is lossless: wait for a client, read only as fast as the queue drains,
 * exit after the last frame is written. With --realtime, or from a live pipe,
 * frames go out as they come and are dropped (counted) when no client keeps up.
 */
export async function outputServe(
  settings: RoleSettings<"output serve">,
  logger: Logger,
  shutdown: Shutdown,
): Promise<number> {
  const report = logger.for("output-server");
  const live = settings.realtime || (await isLiveSource(settings.source));
  // Opening a FIFO waits for its writer (the encoder): a signal must still end the wait.
  const source = await shutdown.race(openSource(settings.format, settings.source, { lenient: settings.lenient }));
  if (!source) return EXIT_OK;
  const { server, telemetry } = await startOutputServer(settings, logger, live);
  try {
    if (!live) {
      report("info", "waiting for a client (lossless file mode)", { source: source.name });
      await shutdown.race(server.waitForClient());
    }
    const writer = server.writer;
    const pumped = pumpSource(
      source,
      {
        submit: (payload) => {
          const tap = telemetry.frameTap;
          if (tap) tap(payload, wallClockMs());
          return server.sendFrame(payload);
        },
        hasSpace: () => !server.queue.isFull,
        waitForSpace: () => writer.waitForSpace(),
      },
      {
        lossless: !live,
        pacer: settings.realtime ? new Pacer() : undefined,
        loop: settings.loop,
        isStopped: () => shutdown.isRequested,
      },
    );
    // A source that fails part-way (a file cut mid-page) still ends the run with an error,
    // but only after the frames read before the failure went out like at a normal end.
    let sourceFailure: unknown;
    await shutdown.race(pumped.catch((e) => void (sourceFailure = e ?? new Error("source failed"))));
    if (!shutdown.isRequested) {
      // Lossless: everything must go out, however long a slow client takes; a signal still ends it.
      if (!live) await shutdown.race(writer.waitForIdle());
    }
    await server.flush(FINAL_FLUSH_MS);
    if (sourceFailure !== undefined) throw sourceFailure;
  } finally {
    await server.stop();
    await telemetry.stop();
    await source.close();
    report("info", "stopped", { signal: shutdown.signal, ...server.stats.toFields() });
  }
  return EXIT_OK;
}
