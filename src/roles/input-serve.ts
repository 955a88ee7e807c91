import { InputServer } from "../channels/input-server.ts";
import { socketBufferSizes, type RoleSettings } from "../config.ts";
import type { FrameSink } from "../media/frame-sink.ts";
import { checkSink, openSink } from "../media/open.ts";
import { SinkFlusher } from "../media/sink-flusher.ts";
import type { Logger } from "../observe/logger.ts";
import { stoppedFields } from "../observe/readings.ts";
import { sizedPipe, sizedSendBuffer } from "../transport/socket-options.ts";
import type { ChannelInstruments } from "./channel-instruments.ts";
import { Instruments } from "./instruments.ts";
import type { Shutdown } from "./shutdown.ts";
import { keepPaceOnStdout, liveStdout } from "./standard-streams.ts";

type Settings = RoleSettings<"input serve">;

/**
 * The input server `settings` ask for, not listening yet, and how it runs
 * once it listens: `serve` opens the sink (an existing file truncated only
 * now, so a port in use or a socket path refused leaves it as it was) and
 * writes every message into it. Sessions follow one another: Stop (or a
 * disconnect) ends one, the sink is flushed, the next client is served; with
 * --once the first session's end ends the channel. Then the server stops,
 * the sink is closed (an Ogg sink gets its end-of-stream page) and the
 * "stopped" line logged.
 */
export function inputChannel(settings: Settings, logger: Logger, beside?: "output"): { server: InputServer; serve: (shutdown: Shutdown, instruments: ChannelInstruments) => Promise<void> } {
  const report = logger.for("input-server");
  const sinkOptions = { preSkip: settings["pre-skip"], pageMs: settings["page-ms"], append: settings.append, channel: "input" } as const;
  // Refused before anything listens (a file --append cannot add to, another user's link): no client is let in for nothing.
  checkSink(settings.format, settings.sink, sinkOptions);
  // Set right after listening, before any client's message can arrive (that takes an I/O event).
  let sink!: FrameSink;
  let flusher!: SinkFlusher;
  const { promise: finished, resolve, reject } = Promise.withResolvers<void>();
  const finish = (error?: Error) => {
    if (!error) return resolve();
    // Every failure here is the sink's: what is read from now on is its to count.
    server.sinkFailed();
    reject(error);
  };
  let closing = false;
  const server = new InputServer({
    path: settings.socket,
    mode: settings["socket-mode"],
    report,
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
    onMessage: (message) => {
      sink.write(message);
      flusher.wrote();
      // A pipe's reader that is behind (stdout to `cat`, say) holds up the reading of the client until it catches up.
      return sink.waiting;
    },
    onSessionEnd: (reason, clean) => {
      // Not when the sink closes next (--once, or the channel stopping): its close writes what is
      // pending as the stream's end, which a FIFO's slow reader may still get, where a flush drops it.
      // Called from the transport's handlers too, where a throw would be lost: a sink that failed ends the run.
      if (!closing && !settings.once) {
        try {
          sink.flush();
        } catch (e) {
          finish(e as Error);
        }
      }
      report("info", clean ? "session ended by Stop" : "session ended without Stop", { reason });
      if (settings.once) {
        // The channel's one session is over: no client that connects or waits now is served.
        server.listener.stopAccepting();
        finish();
      }
    },
    onFailure: (error) => finish(error),
    // Read by the instruments from the start: no sink yet before the server listens.
    droppedBySink: () => sink?.dropped,
    sinkFile: () => sink?.filePlacement?.(),
  });
  const serve = async (shutdown: Shutdown, instruments: ChannelInstruments) => {
    // Every way out, a sink that could not be opened too: each channel ends with its own line.
    const stopped = () => report.last("stopped", { signal: shutdown.signal, ...stoppedFields(server.readings()), ...instruments.latencyFields() });
    try {
      // A FIFO sink (a player) never blocks: late audio is worth nothing, and in `serve` the output channel must not wait.
      const pipeBytes = settings["sink-pipe-bytes"];
      // Beside the output channel, stdout to a player must not block either (the other channel would wait);
      // on its own, stdout keeps its reader's pace as any sink does.
      const stdout = settings.sink === "-" && beside === "output" ? liveStdout(report) : undefined;
      if (settings.sink === "-" && beside === undefined) keepPaceOnStdout(report);
      sink = openSink(settings.format, settings.sink, {
        ...sinkOptions,
        fifoReaders: report,
        // A pipe of the kernel's size keeps a player that fell behind up to 64 KiB (8 s of audio) late;
        // a socket to one (stdout), as far as its send buffer holds (about 200 KiB by default).
        sizePipe: pipeBytes ? (fd) => (stdout === "socket" ? sizedSendBuffer : sizedPipe)(fd, pipeBytes) : undefined,
        liveStdout: stdout !== undefined,
        report,
        // Beside the output channel, a file's disk that stops taking writes must not hold it up: written in the
        // thread pool (about three wake-ups a write, a third of one a frame at the default page-ms: paid there
        // only), its failure ending the run when it is found.
        offLoop: beside === "output" ? (error) => finish(error) : undefined,
      });
    } catch (e) {
      await server.stop();
      stopped();
      throw e;
    }
    flusher = new SinkFlusher(sink, settings["page-ms"], (error) => finish(error));
    try {
      await shutdown.race(finished);
    } finally {
      flusher.stop();
      closing = true;
      await server.stop();
      try {
        // Completes the file (an Ogg sink: its end-of-stream page); on a full disk this throws.
        await sink.close();
      } finally {
        stopped();
      }
    }
  };
  return { server, serve };
}

/** `input serve`: input server -> sink (see inputChannel). */
export async function inputServe(settings: Settings, logger: Logger, shutdown: Shutdown): Promise<void> {
  const { server, serve } = inputChannel(settings, logger);
  const instruments = await Instruments.attach(server, { role: "input serve", settings, logger });
  await instruments.startThen(() => server.listen());
  shutdown.ready();
  try {
    await serve(shutdown, instruments.channels[0]!);
  } finally {
    await instruments.stop();
  }
}
