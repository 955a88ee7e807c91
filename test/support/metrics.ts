/**
 * Scraping a running agent's /metrics and /healthz over HTTP, reading values
 * out of the Prometheus text format, and checking it with promtool.
 */
import type { Spawned } from "./processes.ts";
import { until } from "./wait.ts";

/** The base URL (no trailing slash) of a spawned agent's HTTP server (/metrics, /healthz, /figures), from its "http listening url=..." line. */
export async function metricsUrl(agent: Spawned): Promise<string> {
  const pattern = /http listening url=(http:\/\/[^\s"]+)/;
  await agent.waitForStderr(pattern);
  return pattern.exec(agent.stderr)![1].replace(/\/$/, "");
}

/** How long a scrape may take: an agent held off the CPU (stopped, hung) leaves a fetch waiting for good. */
const ANSWER_MS = 10_000;

/** GET `url` within ANSWER_MS, or an error naming it; the body read in the same bound. */
async function answered<T>(url: string, read: (response: Response) => Promise<T>): Promise<T> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(ANSWER_MS) });
    if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`);
    return await read(response);
  } catch (e) {
    if ((e as Error).name === "TimeoutError") throw new Error(`GET ${url}: no answer within ${ANSWER_MS} ms`);
    throw e;
  }
}

export async function scrape(base: string): Promise<string> {
  return answered(`${base}/metrics`, (response) => response.text());
}

export async function healthz(base: string): Promise<Record<string, unknown>> {
  return answered(`${base}/healthz`, async (response) => (await response.json()) as Record<string, unknown>);
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line of a text exposition. */
export function parseSamples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Samples of `name` whose labels include `labels`. */
export function samples(text: string, name: string, labels: Record<string, string> = {}): Sample[] {
  return parseSamples(text).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

/** The one sample of `name` with `labels`; throws when there is none or more than one. */
export function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const found = samples(text, name, labels);
  if (found.length !== 1) {
    throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples in the scrape`);
  }
  return found[0].value;
}

/** Metric families announced by # TYPE lines, name -> type. */
export function families(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1], m[2]);
  return out;
}

/** Pipes `text` through `promtool check metrics`; exit code and everything it printed. */
export async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const proc = Bun.spawn(["promtool", "check", "metrics"], {
    stdin: new Blob([text]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, output: (out + err).trim() };
}

/** The one sample of `name` with `labels` in a fresh scrape. */
export async function scrapeValue(base: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return value(await scrape(base), name, labels);
}

/** Polls `check` against fresh scrapes until it holds; returns the last scrape. */
export async function scrapeUntil(base: string, check: (text: string) => boolean, what: string, timeoutMs = 20000): Promise<string> {
  let text = "";
  try {
    await until(async () => check((text = await scrape(base))), what, timeoutMs, 20);
  } catch (e) {
    throw new Error(`${(e as Error).message}; last scrape:\n${text}`);
  }
  return text;
}

/**
 * Waits until an agent has received some of the `total` frames a peer sends
 * (counted by the metric `name`) and then no more for a while: what it writes
 * them to is not being read, and it reads no more of its socket. Returns how
 * many it received; fails after `timeoutMs` with the last count seen.
 */
export async function heldUp(base: string, name: string, total: number, timeoutMs = 30_000): Promise<number> {
  const start = Date.now();
  let last = -1;
  for (;;) {
    const now = await scrapeValue(base, name);
    if (now > 0 && now === last) {
      if (now >= total) throw new Error(`${name} reached ${now} of ${total}: nothing held it up`);
      return now;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${name} to stop rising: ${now} after ${timeoutMs} ms`);
    last = now;
    await Bun.sleep(300);
  }
}
