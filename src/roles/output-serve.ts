import { OutputServer } from "../channels/output-server.ts";
import type { RoleSettings } from "../config.ts";
import type { FrameSource } from "../media/frame-source.ts";
import { isLiveSource, openSource } from "../media/open.ts";
import { Pacer } from "../media/pacer.ts";
import { pumpSource } from "../media/pump.ts";
import type { Logger } from "../observe/logger.ts";
import { stoppedFields } from "../observe/readings.ts";
import type { ChannelInstruments } from "./channel-instruments.ts";
import { Instruments } from "./instruments.ts";
import { FINAL_FLUSH_MS, senderOptions } from "./sender-options.ts";
import type { Shutdown } from "./shutdown.ts";

type Settings = RoleSettings<"output serve">;

/**
 * The output server `settings` ask for, not listening yet; `live` drops what
 * no client takes, else lossless. `source`, given, is the one that will feed
 * it: its counts are part of the server's readings.
 */
export function outputServer(settings: Settings, logger: Logger, live: boolean, source?: FrameSource): OutputServer {
  const server = new OutputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report: logger.for("output-server"),
    ...senderOptions(settings, live),
  });
  if (source) server.fedBy(source);
  return server;
}

/**
 * The output server with its instruments attached, listening: `output serve`
 * as it runs (the benchmark builds its sender with this too, so it measures
 * exactly what ships).
 */
export async function startOutputServer(settings: Settings, logger: Logger, live: boolean, source?: FrameSource): Promise<{ server: OutputServer; instruments: Instruments }> {
  const server = outputServer(settings, logger, live, source);
  // Attached before listening: a client connecting at once is observed.
  const instruments = await Instruments.attach(server, { role: "output serve", settings, logger });
  await instruments.startThen(() => server.listen());
  return { server, instruments };
}

/**
 * The source of `output serve`, opened without waiting for anything: a
 * file's format is checked before anything listens, and a FIFO is read once
 * the socket and endpoints are up, from one writer to the next. Live with
 * --realtime, or from stdin or a FIFO; a file without --realtime is lossless.
 */
export async function openOutputSource(settings: Settings, logger: Logger): Promise<{ source: FrameSource; live: boolean }> {
  const live = settings.realtime || (await isLiveSource(settings.source));
  const source = await openSource(settings.format, settings.source, { lenient: settings.lenient, report: logger.for("source") });
  return { source, live };
}

/**
 * Streams `source` through the listening `server` until the source ends
 * (lossless: until a client has taken everything) or a stop is requested;
 * then writes out what is queued, stops the server, closes the source and
 * logs the "stopped" line. A source that fails part-way ends it with that
 * failure, after the frames read before it went out like at a normal end.
 */
export async function streamOutput(
  server: OutputServer,
  source: FrameSource,
  settings: Settings,
  live: boolean,
  shutdown: Shutdown,
  logger: Logger,
  instruments: ChannelInstruments,
): Promise<void> {
  const report = logger.for("output-server");
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
    let sourceFailure: unknown;
    await shutdown.race(pumped.catch((e) => void (sourceFailure = e ?? new Error("source failed"))));
    // Lossless: everything must go out, however long a slow client takes; a signal still ends it.
    if (!shutdown.isRequested && !live) await shutdown.race(server.waitForIdle());
    // The stop begins: a client coming now would replace the one taking the last frames, mid-frame.
    server.stopAccepting();
    await server.flush(FINAL_FLUSH_MS);
    if (sourceFailure !== undefined) throw sourceFailure;
  } finally {
    await server.stop();
    await source.close();
    report.last("stopped", { signal: shutdown.signal, ...stoppedFields(server.readings()), ...instruments.latencyFields() });
  }
}

/**
 * `output serve`: source -> output server. A file source without --realtime
 * is lossless: wait for a client, read only as fast as the queue drains,
 * exit after the last frame is written. With --realtime, or from stdin or a
 * FIFO, frames go out as they come and are dropped (counted) when no client
 * keeps up; a FIFO is served from one writer to the next until a signal.
 */
export async function outputServe(settings: Settings, logger: Logger, shutdown: Shutdown): Promise<void> {
  const { source, live } = await openOutputSource(settings, logger);
  const { server, instruments } = await startOutputServer(settings, logger, live, source);
  shutdown.ready();
  try {
    await streamOutput(server, source, settings, live, shutdown, logger, instruments.channels[0]!);
  } finally {
    await instruments.stop();
  }
}
