import type { SenderOptions } from "../channels/sending-end.ts";
import { socketBufferSizes, type Settings } from "../config.ts";

/** How long a sender at its stop may take writing out what is queued (and, a client, its Stop); `output recv`, reading what its server wrote before. */
export const FINAL_FLUSH_MS = 1000;

type SenderSettings = Settings<"queue-frames" | "drop" | "write-deadline-ms" | "max-latency-ms" | "stuck-frames" | "socket-buffers">;

/** How a sending channel end (output serve's server, input send's client) queues and drops, from its settings. */
export function senderOptions(settings: SenderSettings, live: boolean): SenderOptions {
  return {
    queueFrames: settings["queue-frames"],
    dropPolicy: settings.drop,
    lossless: !live,
    writeDeadlineMs: settings["write-deadline-ms"],
    maxLatencyMs: settings["max-latency-ms"],
    stuckFrames: settings["stuck-frames"],
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
  };
}
