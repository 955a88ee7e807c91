import { InputServer } from "../channels/input-server.ts";
import { socketBufferSizes, type RoleSettings } from "../config.ts";
import type { FrameSink } from "../media/frame-sink.ts";
import { openSink } from "../media/open.ts";
import { SinkFlusher } from "../media/sink-flusher.ts";
import type { Logger } from "../observe/logger.ts";
import { summaryFields } from "../observe/readings.ts";
import { Instruments } from "./instruments.ts";
import type { Shutdown } from "./shutdown.ts";

/**
 * `input serve`: input server -> sink. Sessions follow one another: Stop (or
 * a disconnect) ends one, the sink is flushed, the next client is served;
 * with --once the first session's end ends the run. The sink is opened (an
 * existing file truncated) only once the endpoints and the socket listen, so
 * a port in use or a socket path refused leaves it as it was.
 */
export async function inputServe(settings: RoleSettings<"input serve">, logger: Logger, shutdown: Shutdown): Promise<void> {
  const report = logger.for("input-server");
  // Set right after listening, before any client's message can arrive (that takes an I/O event).
  let sink!: FrameSink;
  let flusher!: SinkFlusher;
  const { promise: finished, resolve, reject } = Promise.withResolvers<void>();
  const finish = (error?: Error) => (error ? reject(error) : resolve());
  const server = new InputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report,
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
    onMessage: (message) => {
      sink.write(message);
      flusher.wrote();
    },
    onSessionEnd: (reason, clean) => {
      sink.flush();
      report("info", clean ? "session ended by Stop" : "session ended without Stop", { reason });
      if (settings.once) finish();
    },
    onFailure: (error) => finish(error),
  });
  const instruments = await Instruments.attach(server, { role: "input serve", settings, logger });
  await instruments.startThen(() => server.listen());
  try {
    sink = openSink(settings.format, settings.sink, { preSkip: settings["pre-skip"], pageMs: settings["page-ms"] });
  } catch (e) {
    await server.stop();
    await instruments.stop();
    throw e;
  }
  flusher = new SinkFlusher(sink, settings["page-ms"], (error) => finish(error));
  try {
    await shutdown.race(finished);
  } finally {
    flusher.stop();
    await server.stop();
    await instruments.stop();
    try {
      // Completes the file (an Ogg sink: its end-of-stream page); on a full disk this throws.
      sink.close();
    } finally {
      report("info", "stopped", { signal: shutdown.signal, ...summaryFields(server.readings()), ...instruments.latencyFields() });
    }
  }
}
