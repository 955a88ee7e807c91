/** Recording what code under test reports through its Report callback (src/transport/report.ts). */
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
