/** Recording what code under test reports: through its Report callback (src/transport/report.ts), or to its observer. */
import type { ChannelObserver } from "../../src/channels/channel-end.ts";
import type { Report, ReportLevel } from "../../src/transport/report.ts";

export interface Reported {
  level: ReportLevel;
  message: string;
  fields?: Record<string, unknown>;
}

/** A Report that records every call, in order. */
export function recordingReport(): { reports: Reported[]; report: Report } {
  const reports: Reported[] = [];
  return { reports, report: (level, message, fields) => reports.push({ level, message, fields }) };
}

/**
 * A ChannelObserver (src/channels/channel-end.ts) recording every event as a
 * line: "connected <detail>", "disconnected <reason>", "written <messages>
 * <bytes>", "round trip", "frame age"; the ages (ms) apart.
 */
export function recordingObserver(): { events: string[]; ages: number[]; observer: ChannelObserver } {
  const events: string[] = [];
  const ages: number[] = [];
  const observer: ChannelObserver = {
    written: (messages, bytes) => void events.push(`written ${messages} ${bytes}`),
    submitted: () => {},
    frameAge: (ms) => void (events.push("frame age"), ages.push(ms)),
    roundTrip: () => void events.push("round trip"),
    connection: (kind, detail) => void events.push(`${kind} ${detail}`),
    frameTap: undefined,
  };
  return { events, ages, observer };
}
