import { closeSync } from "node:fs";
import { OutputClient } from "../channels/output-client.ts";
import { socketBufferSizes, type RoleSettings } from "../config.ts";
import { within } from "../io/within.ts";
import { holdFifoForWriting } from "../media/byte-sink.ts";
import type { FrameSink } from "../media/frame-sink.ts";
import { openSink } from "../media/open.ts";
import { SinkFlusher } from "../media/sink-flusher.ts";
import type { Logger } from "../observe/logger.ts";
import { stoppedFields } from "../observe/readings.ts";
import { MessageType, type ParsedMessage } from "../protocol/index.ts";
import { Instruments } from "./instruments.ts";
import { FINAL_FLUSH_MS } from "./sender-options.ts";
import type { Shutdown } from "./shutdown.ts";
import { keepPaceOnStdout } from "./standard-streams.ts";

/**
 * The output client with its instruments attached: `output recv` as it runs
 * (the benchmark's receiver too). `onMessage` gets every valid message; call
 * `client.run()` to connect. `sink`, once opened, is read with the readings:
 * what it dropped, and where its file stands.
 */
export async function startOutputClient(
  settings: RoleSettings<"output recv">,
  logger: Logger,
  onMessage: (message: ParsedMessage) => void | Promise<void>,
  sink?: () => FrameSink | undefined,
): Promise<{ client: OutputClient; instruments: Instruments }> {
  const client = new OutputClient({
    path: settings.socket,
    report: logger.for("output-client"),
    connectTimeoutMs: settings["connect-timeout"] === undefined ? undefined : settings["connect-timeout"] * 1000,
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
    onMessage,
    droppedBySink: () => sink?.()?.dropped,
    sinkFile: () => sink?.()?.filePlacement?.(),
  });
  const instruments = await Instruments.attach(client, { role: "output recv", settings, logger });
  await instruments.start();
  return { client, instruments };
}

/**
 * `output recv`: output client -> sink, reconnecting whenever the server goes
 * away. The sink is opened (an existing file truncated) once the endpoints
 * listen, so a port in use leaves it as it was.
 */
export async function outputRecv(settings: RoleSettings<"output recv">, logger: Logger, shutdown: Shutdown): Promise<void> {
  const report = logger.for("output-client");
  const limit = settings.count;
  let frames = 0;
  // Set before client.run() connects, the first time a message can arrive.
  let sink!: FrameSink;
  let flusher!: SinkFlusher;
  const { client, instruments } = await startOutputClient(settings, logger, (message) => {
    // The output channel carries OpusFrames; anything else a server sends (a Config, a Heartbeat) is
    // tolerated and ignored (as the wire contract has it), never recorded or taken for the stream's audio.
    if (message.type !== MessageType.OpusFrame) return;
    // Counted before the write: the frame a failing write drops still counts toward --count.
    const last = ++frames === limit;
    try {
      sink.write(message);
      flusher.wrote();
    } finally {
      if (last) client.stop();
    }
    // A pipe's reader that is behind holds the reading of the socket until it catches up.
    return sink.waiting;
  }, () => sink);
  shutdown.ready();
  // Every way out, a sink that could not be opened too: the run's log ends with its accounting.
  const stopped = () => report.last("stopped", { signal: shutdown.signal, ...stoppedFields(client.readings()), ...instruments.latencyFields() });
  try {
    const fifo = await holdFifoForWriting(
      settings.sink,
      () => shutdown.isRequested,
      () => report("info", "waiting for a reader of the sink FIFO", { sink: settings.sink }),
      (code) => report("warn", `cannot open the sink FIFO (${code}); trying again until it can`, { sink: settings.sink }),
    );
    if (shutdown.isRequested) {
      if (fifo !== undefined) closeSync(fifo);
      await instruments.stop();
      stopped();
      return;
    }
    // The FIFO is written through the descriptor its reader was found with, non-blocking: a slow
    // reader holds up the reading of the socket (the sink's `waiting`), never the process.
    if (settings.sink === "-") keepPaceOnStdout(report);
    sink = openSink(settings.format, settings.sink, {
      preSkip: settings["pre-skip"],
      pageMs: settings["page-ms"],
      channels: settings.channels,
      fd: fifo,
      append: settings.append,
      channel: "output",
      report,
    });
  } catch (e) {
    await instruments.stop();
    stopped();
    throw e;
  }
  flusher = new SinkFlusher(sink, settings["page-ms"], (error) => client.fail(error));
  const running = client.run(settings.once);
  // Settled after the signal too (a sink that fails while the rest is read): awaited below.
  running.catch(() => {});
  try {
    await shutdown.race(running);
    if (shutdown.isRequested) {
      // What the server wrote before the signal, which it counts as delivered, is recorded too (bounded wait).
      await within(client.finish(), FINAL_FLUSH_MS, undefined);
      client.stop();
      await running;
    }
  } finally {
    flusher.stop();
    client.stop();
    await instruments.stop();
    try {
      // Completes the file (an Ogg sink: its end-of-stream page); on a full disk this throws.
      await sink.close();
    } finally {
      stopped();
    }
  }
}
