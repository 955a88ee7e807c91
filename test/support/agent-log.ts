/**
 * Reading what a spawned agent logged (the text format on stderr,
 * `<time> <LEVEL> <component>: <message> key=value ...`): the fields of a
 * line, the one line a failing command prints, and the accounting
 * invariant on a sender's final "stopped" line.
 */
import { expect } from "bun:test";
import { DROP_REASONS, type FrameStats } from "../../src/transport/frame-stats.ts";

/** The fields of each log line `<component>: <message> k=v ...` (quoted values unquoted), in order. */
export function allLogFields(stderr: string, component: string, message: string): Record<string, string>[] {
  const marker = ` ${component}: ${message}`;
  return stderr
    .split("\n")
    .filter((l) => l.includes(marker + " ") || l.endsWith(marker))
    .map((line) => {
      const rest = line.slice(line.indexOf(marker) + marker.length);
      const fields: Record<string, string> = {};
      for (const m of rest.matchAll(/ ([\w-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
        fields[m[1]!] = m[2]!.startsWith('"') ? JSON.parse(m[2]!) : m[2]!;
      }
      return fields;
    });
}

/** The fields of the last log line `<component>: <message> k=v ...`, or undefined when there is none. */
export function findLogFields(stderr: string, component: string, message: string): Record<string, string> | undefined {
  return allLogFields(stderr, component, message).at(-1);
}

/** The fields of the last log line `<component>: <message> k=v ...`; throws when there is none. */
export function logFields(stderr: string, component: string, message: string): Record<string, string> {
  const fields = findLogFields(stderr, component, message);
  if (!fields) throw new Error(`no "${component}: ${message}" line in:\n${stderr}`);
  return fields;
}

/** The one line the CLI prints for a failure ("audio-agent: ..."), and that it is the only one. */
export function failureLine(stderr: string): string {
  const lines = stderr.split("\n").filter((l) => l.startsWith("audio-agent: "));
  expect(lines.length).toBe(1);
  return lines[0]!;
}

export interface Accounting {
  submitted: number;
  delivered: number;
  dropped: number;
  /** dropped_<reason> counts (only the non-zero ones are logged). */
  byReason: Record<string, number>;
}

/**
 * The invariant on a sender's final "stopped" line: submitted = delivered +
 * dropped, and (where the line breaks drops down by reason, as `output
 * serve` does) dropped is exactly the sum of the per-reason counts, each a
 * known reason.
 */
export function expectAccountedLine(stderr: string, component = "output-server", byReasonLogged = component === "output-server"): Accounting {
  const fields = logFields(stderr, component, "stopped");
  const num = (key: string) => {
    const n = Number(fields[key]);
    if (!Number.isInteger(n)) throw new Error(`stopped line: ${key}=${fields[key]} is not a count`);
    return n;
  };
  const byReason: Record<string, number> = {};
  for (const key of Object.keys(fields)) {
    if (!key.startsWith("dropped_")) continue;
    const reason = key.slice("dropped_".length);
    expect(DROP_REASONS as readonly string[]).toContain(reason);
    byReason[reason] = num(key);
  }
  const accounting = { submitted: num("submitted"), delivered: num("delivered"), dropped: num("dropped"), byReason };
  expect(accounting.submitted).toBe(accounting.delivered + accounting.dropped);
  if (byReasonLogged) expect(Object.values(byReason).reduce((a, b) => a + b, 0)).toBe(accounting.dropped);
  return accounting;
}

/** The same invariant on an in-process FrameStats. */
export function expectAccountedStats(stats: FrameStats): void {
  expect(stats.submitted).toBe(stats.delivered + stats.droppedTotal);
}
