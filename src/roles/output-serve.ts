import { OutputServer } from "../channels/output-server.ts";
import { socketBufferSizes, type RoleSettings } from "../config.ts";
import { isLiveSource, openSource } from "../media/open.ts";
import { Pacer } from "../media/pacer.ts";
import { pumpSource } from "../media/pump.ts";
import type { Logger } from "../observe/logger.ts";
import { summaryFields } from "../observe/readings.ts";
import { Instruments } from "./instruments.ts";
import type { Shutdown } from "./shutdown.ts";

/** Bound on writing out queued frames at shutdown. */
const FINAL_FLUSH_MS = 1000;

/**
 * The output server with its instruments attached, listening: `output serve`
 * as it runs (the benchmark builds its sender with this too, so it measures
 * exactly what ships).
 */
export async function startOutputServer(
  settings: RoleSettings<"output serve">,
  logger: Logger,
  live: boolean,
): Promise<{ server: OutputServer; instruments: Instruments }> {
  const server = new OutputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report: logger.for("output-server"),
    queueFrames: settings["queue-frames"],
    dropPolicy: settings.drop,
    lossless: !live,
    writeDeadlineMs: settings["write-deadline-ms"],
    maxLatencyMs: settings["max-latency-ms"],
    stuckFrames: settings["stuck-frames"],
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
  });
  // Attached before listening: a client connecting at once is observed.
  const instruments = await Instruments.attach(server, { role: "output serve", settings, logger });
  await instruments.startThen(() => server.listen());
  return { server, instruments };
}

/**
 * `output serve`: source -> output server. A file source without --realtime
 * is lossless: wait for a client, read only as fast as the queue drains,
 * exit after the last frame is written. With --realtime, or from stdin or a
 * FIFO, frames go out as they come and are dropped (counted) when no client
 * keeps up; a FIFO is served from one writer to the next until a signal.
 */
export async function outputServe(settings: RoleSettings<"output serve">, logger: Logger, shutdown: Shutdown): Promise<void> {
  const report = logger.for("output-server");
  const live = settings.realtime || (await isLiveSource(settings.source));
  // Opening waits for nothing: a file's format is checked before anything listens, and a
  // FIFO is read once the socket and endpoints are up, from one writer to the next.
  const source = await openSource(settings.format, settings.source, { lenient: settings.lenient, report: logger.for("source") });
  const { server, instruments } = await startOutputServer(settings, logger, live);
  try {
    if (!live) {
      report("info", "waiting for a client (lossless file mode)", { source: source.name });
      await shutdown.race(server.waitForClient());
    }
    const pumped = pumpSource(source, server, {
      lossless: !live,
      pacer: settings.realtime ? new Pacer() : undefined,
      loop: settings.loop,
      isStopped: () => shutdown.isRequested,
    });
    // A source that fails part-way (a file cut mid-page) still ends the run with an error,
    // but only after the frames read before the failure went out like at a normal end.
    let sourceFailure: unknown;
    await shutdown.race(pumped.catch((e) => void (sourceFailure = e ?? new Error("source failed"))));
    // Lossless: everything must go out, however long a slow client takes; a signal still ends it.
    if (!shutdown.isRequested && !live) await shutdown.race(server.waitForIdle());
    await server.flush(FINAL_FLUSH_MS);
    if (sourceFailure !== undefined) throw sourceFailure;
  } finally {
    await server.stop();
    await instruments.stop();
    await source.close();
    report("info", "stopped", { signal: shutdown.signal, ...summaryFields(server.readings()), ...instruments.latencyFields() });
  }
}
