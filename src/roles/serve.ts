import type { ServeSettings } from "../config.ts";
import type { Logger } from "../observe/logger.ts";
import { inputChannel } from "./input-serve.ts";
import { Instruments } from "./instruments.ts";
import { openOutputSource, outputServer, streamOutput } from "./output-serve.ts";
import type { Shutdown } from "./shutdown.ts";

/**
 * `serve`: `output serve` and `input serve` in one process, so a device pays
 * the runtime's memory once. Each channel runs as its own role would, with
 * its own socket, settings, "stopped" line and accounting; the process has
 * one set of instruments (one registry, /healthz, monitor, sampler tick).
 * A channel that ends on its own (a file played out to a client, the first
 * session with --input-once) stops alone, and the other carries on; the run
 * ends when both have ended, or at a signal. A channel that fails (an
 * unreadable source, a sink that cannot be written) stops the other cleanly,
 * as a signal would, and the run ends with that failure.
 */
export async function serve(settings: ServeSettings, logger: Logger, shutdown: Shutdown): Promise<void> {
  const report = logger.for("agent");
  const { source, live } = await openOutputSource(settings.output, logger);
  const output = outputServer(settings.output, logger, live, source);
  const input = inputChannel(settings.input, logger, "output");
  const instruments = await Instruments.attachAll(
    [
      { end: output, settings: settings.output },
      { end: input.server, settings: settings.input },
    ],
    { role: "serve", settings, logger },
  );
  await instruments.startThen(async () => {
    await output.listen();
    try {
      await input.server.listen();
    } catch (e) {
      await output.stop();
      throw e;
    }
  });
  shutdown.ready();
  let failure: { error: unknown } | undefined;
  const channel = (name: string, run: () => Promise<void>) =>
    run().catch((error) => {
      if (failure) return;
      failure = { error };
      report("warn", `${name} channel failed; stopping the other`);
      shutdown.request(`${name} channel failed`);
    });
  try {
    await Promise.all([
      channel("output", () => streamOutput(output, source, settings.output, live, shutdown, logger, instruments.channels[0]!)),
      channel("input", () => input.serve(shutdown, instruments.channels[1]!)),
    ]);
  } finally {
    await instruments.stop();
  }
  if (failure) throw failure.error;
}
