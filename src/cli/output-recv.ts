import { OutputClient } from "../channels/output-client.ts";
import type { RoleSettings } from "../config.ts";
import type { Logger } from "../observe/logger.ts";
import { MessageType } from "../protocol/index.ts";
import { EXIT_OK } from "./errors.ts";
import { flushPeriodically, openSink } from "./media-open.ts";
import type { Shutdown } from "./shutdown.ts";

/** `output recv`: output client -> sink, reconnecting whenever the server goes away. */
export async function outputRecv(
  settings: RoleSettings<"output recv">,
  logger: Logger,
  shutdown: Shutdown,
): Promise<number> {
  const report = logger.for("output-client");
  const sink = openSink(settings.format, settings.sink);
  const limit = settings.count;
  let frames = 0;
  const client: OutputClient = new OutputClient({
    path: settings.socket,
    report,
    connectTimeoutMs: settings["connect-timeout"] === undefined ? undefined : settings["connect-timeout"] * 1000,
    onMessage: (message) => {
      sink.write(message);
      if (message.type === MessageType.OpusFrame && ++frames === limit) client.stop();
    },
  });
  const stopFlushing = flushPeriodically(sink);
  try {
    await shutdown.race(client.run(settings.once));
  } finally {
    stopFlushing();
    client.stop();
    sink.close();
    report("info", "stopped", {
      signal: shutdown.signal,
      frames: client.framesReceived,
      other_messages: client.otherMessages,
      protocol_errors: client.protocolErrors,
      connects: client.connects,
    });
  }
  return EXIT_OK;
}
