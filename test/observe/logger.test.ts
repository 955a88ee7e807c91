/**
 * The log: JSON lines in pino's shape that pino-pretty (a dev dependency,
 * run as a process) renders as they are, the failure line included; text
 * lines as before; and the rate limit per kind of line (component and
 * message), with one summary per window for what it held back.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { DEFAULT_LOG_RATE_LIMIT } from "../../src/observe/log-rate-limiter.ts";
import { LOG_LEVELS, Logger } from "../../src/observe/logger.ts";
import { useCleanup } from "../support/cleanup.ts";
import { RecordingClient } from "../support/peer.ts";
import { agentEnv, runAgent, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire } from "../support/wire.ts";

const defer = useCleanup();
const PINO_PRETTY = resolve(import.meta.dir, "../../node_modules/.bin/pino-pretty");

function setup() {
  const dir = socketDir(defer, "log-");
  defer(stopAgents);
  return dir;
}

interface PinoLine {
  level: number;
  time: number;
  pid: number;
  hostname: string;
  msg: string;
  component: string;
  [field: string]: unknown;
}

/** Every stderr line parsed as JSON (a line that is not JSON fails the test). */
function jsonLines(stderr: string): PinoLine[] {
  return stderr
    .trim()
    .split("\n")
    .map((line) => {
      try {
        return JSON.parse(line) as PinoLine;
      } catch {
        throw new Error(`not a JSON line: ${line}`);
      }
    });
}

/** pino-pretty, run as a process on `input`, without colours, one line per record. */
async function pinoPretty(input: string): Promise<string> {
  const proc = Bun.spawn([PINO_PRETTY, "--singleLine", "--translateTime", "SYS:standard"], {
    stdin: new Blob([input]),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect(err).toBe("");
  expect(code).toBe(0);
  return out;
}

const PRETTY_LEVEL: Record<number, string> = { 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };

/** pino-pretty's output must be each record rendered, never a line passed through as it came. */
async function expectRendered(stderr: string): Promise<void> {
  const records = jsonLines(stderr);
  const pretty = (await pinoPretty(stderr)).trimEnd().split("\n");
  expect(pretty.length).toBe(records.length);
  records.forEach((record, i) => {
    const line = pretty[i]!;
    expect(line.startsWith("{")).toBe(false);
    expect(line).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}/);
    expect(line).toContain(`${PRETTY_LEVEL[record.level]} (${record.pid}`);
    expect(line).toContain(record.msg);
    expect(line).toContain(`"component":"${record.component}"`);
  });
}

describe("JSON lines in pino's shape", () => {
  test("a whole run of `output serve`: every line is pino's shape, and pino-pretty renders each one", async () => {
    const dir = setup();
    const socket = dir.path("out.sock");
    const source = dir.path("src.wire");
    writeFileSync(source, indexedWire(0, 20));
    const before = Date.now();
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", source, "--log-format", "json"]);
    await server.waitForStderr('"msg":"listening"');
    const client = await RecordingClient.connect(socket);
    defer(() => client.close());
    expect(await server.exited).toBe(0);
    const after = Date.now();
    expect(client.frames.length).toBe(20);

    const records = jsonLines(server.stderr);
    expect(records.map((r) => r.msg)).toEqual(expect.arrayContaining(["listening", "client connected", "stopped"]));
    for (const record of records) {
      expect(Object.keys(record).slice(0, 6)).toEqual(["level", "time", "pid", "hostname", "msg", "component"]);
      expect([20, 30, 40, 50]).toContain(record.level);
      expect(record.time).toBeGreaterThanOrEqual(before);
      expect(record.time).toBeLessThanOrEqual(after);
      expect(record.pid).toBe(server.pid);
      expect(record.hostname).toBe(hostname());
    }
    const stopped = records.find((r) => r.msg === "stopped")!;
    expect(stopped).toMatchObject({ level: 30, component: "output-server", submitted: 20, delivered: 20, dropped: 0 });
    await expectRendered(server.stderr);
  });

  test("the failure line is JSON too (pino fatal, 60), also for a usage error; pino-pretty renders it", async () => {
    const dir = setup();
    const missing = join(dir.dir, "gone", "out.sock");
    const failed = await runAgent(["output", "serve", "--socket", missing, "--source", "-", "--log-format", "json"]);
    expect(failed.code).toBe(2);
    const last = jsonLines(failed.stderr).at(-1)!;
    expect(last).toMatchObject({ level: 60, component: "agent", exit_code: 2, msg: `--socket: socket directory ${join(dir.dir, "gone")} does not exist` });
    await expectRendered(failed.stderr);

    const usage = await runAgent(["output", "serve", "--bogus", "--log-format=json"]);
    expect(usage.code).toBe(2);
    const lines = jsonLines(usage.stderr);
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatchObject({ level: 60, exit_code: 2 });
    expect(lines[0]!.msg).toContain("--bogus");
    await expectRendered(usage.stderr);

    const fromEnv = spawnAgent(["output", "serve", "--bogus"], { env: { ...process.env, AUDIO_AGENT_LOG_FORMAT: "json" } as Record<string, string> });
    expect(await fromEnv.exited).toBe(2);
    expect(jsonLines(fromEnv.stderr)[0]).toMatchObject({ level: 60, exit_code: 2 });
  });

  test("JSON set in the config file (top level or the channel's section): a usage error's line is JSON too", async () => {
    const dir = setup();
    const top = join(dir.dir, "top.json");
    const section = join(dir.dir, "section.json");
    writeFileSync(top, JSON.stringify({ "log-format": "json" }));
    writeFileSync(section, JSON.stringify({ output: { "log-format": "json" } }));
    const cases = [
      ["output", "serve", "--bogus", "--config", top],
      ["output", "serve", "--config", section, "--queue-frames", "0", "--source", "-"],
      ["output", "recv", "--sink"],
    ];
    for (const args of cases) {
      const failed = await runAgent(args, { env: agentEnv({ AUDIO_AGENT_CONFIG: args.includes("recv") ? section : top }) });
      expect(failed.code).toBe(2);
      const lines = jsonLines(failed.stderr);
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatchObject({ level: 60, exit_code: 2 });
    }
    // A file that fails its own checks (a bad value beside the format, an unknown key) still asks for JSON.
    for (const bad of [{ "log-format": "json", "queue-frames": "lots" }, { output: { "log-format": "json" }, bogus: 1 }]) {
      writeFileSync(top, JSON.stringify(bad));
      const failed = await runAgent(["output", "recv", "--config", top, "--sink", join(dir.dir, "out.wire")]);
      expect(failed.code).toBe(2);
      expect(jsonLines(failed.stderr)).toEqual([expect.objectContaining({ level: 60, exit_code: 2, msg: expect.stringContaining(top) })]);
    }
    // The file sets text for input roles, a flag still asks for JSON.
    writeFileSync(section, JSON.stringify({ "log-format": "json", input: { "log-format": "text" } }));
    const text = await runAgent(["input", "send", "--bogus"], { env: agentEnv({ AUDIO_AGENT_CONFIG: section }) });
    expect(text.stderr).toMatch(/^audio-agent: .*--bogus/);
    const flag = await runAgent(["input", "send", "--bogus", "--log-format", "json"], { env: agentEnv({ AUDIO_AGENT_CONFIG: section }) });
    expect(jsonLines(flag.stderr)[0]).toMatchObject({ level: 60, exit_code: 2 });
  });

  test("serve: JSON set in one channel's section (which serve takes for the whole process) makes a usage error's line JSON too, as a runtime failure's is", async () => {
    const dir = setup();
    const section = join(dir.dir, "section.json");
    writeFileSync(section, JSON.stringify({ output: { "log-format": "json" } }));
    const env = agentEnv({ AUDIO_AGENT_CONFIG: section });
    // A runtime failure, once the settings are resolved: JSON, as the section asks.
    const runtime = await runAgent(
      ["serve", "--output-source", join(dir.dir, "missing.opus"), "--input-sink", join(dir.dir, "in.wire"), "--output-socket", join(dir.dir, "o.sock"), "--input-socket", join(dir.dir, "i.sock")],
      { env },
    );
    expect(runtime.code).toBe(1);
    expect(jsonLines(runtime.stderr).at(-1)).toMatchObject({ level: 60, exit_code: 1 });
    // Failures before the settings are resolved: an unknown flag, a bad flag value, a required flag missing.
    for (const args of [["serve", "--bogus"], ["serve", "--output-queue-frames", "0"], ["serve", "--input-sink", join(dir.dir, "in.wire")]]) {
      const failed = await runAgent(args, { env });
      expect(failed.code).toBe(2);
      expect({ args, lines: jsonLines(failed.stderr) }).toEqual({ args, lines: [expect.objectContaining({ level: 60, exit_code: 2 })] });
    }
  });

  test("text mode is unchanged: `audio-agent: message` for the failure", async () => {
    const usage = await runAgent(["output", "serve", "--bogus"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^audio-agent: .*--bogus/);
  });

  test("a field named like one of pino's keys never replaces it", () => {
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "json", write: (line) => out.push(line) });
    const clash = { level: "loud", time: "noon", pid: -1, hostname: "elsewhere", msg: "other", component: "other", kept: 1 };
    logger.for("output-server")("warn", "client stuck", clash);
    const line = JSON.parse(out[0]!) as PinoLine;
    expect(line).toMatchObject({ level: 40, pid: process.pid, hostname: hostname(), msg: "client stuck", component: "output-server", kept: 1 });
    expect(typeof line.time).toBe("number");
  });
});

describe("text lines", () => {
  test("a value is written as it is, or quoted when it holds a space of any kind, a control character, a quote or =", () => {
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "text", write: (line) => out.push(line) });
    const values = {
      plain: "/run/audio.sock",
      accented: "caf\u00e9-\u97f3",
      number: 3,
      space: "a b",
      tab: "a\tb",
      newline: "a\nb",
      nbsp: "a\u00a0b",
      separator: "a\u2028b",
      ideographic: "a\u3000b",
      escape: "a\u001bb",
      del: "a\u007fb",
      c1: "a\u0085b",
      quote: 'a"b',
      equals: "a=b",
      list: ["a", "b"],
    };
    logger.for("test")("info", "values", values);
    const fields = out[0]!.slice(out[0]!.indexOf("values ") + "values ".length);
    const expected = Object.entries(values)
      .map(([key, value]) => {
        const text = typeof value === "string" ? value : JSON.stringify(value);
        const quoted = !["plain", "accented", "number"].includes(key);
        // JSON's escaping, and of DEL, the C1 controls and U+2028 too, which JSON leaves raw.
        const escaped = JSON.stringify(text).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
        return `${key}=${quoted ? escaped : text}`;
      })
      .join(" ");
    expect(fields).toBe(expected);
    expect(out[0]).not.toContain("\n");
    expect(fields).toContain('plain=/run/audio.sock accented=caf\u00e9-\u97f3 number=3 space="a b" tab="a\\tb"');
  });
});

describe("text messages", () => {
  test("a control character, DEL, a C1 control, a line separator or a backslash before u in a message is written as \\uXXXX, in a line and in the failure line; all else as it is", () => {
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "text", write: (line) => out.push(line) });
    const wrong: string[] = [];
    for (let c = 0; c < 0x10000; c++) {
      const message = `a${String.fromCharCode(c)}u`;
      const escape = c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || c === 0x5c;
      const expected = escape ? `a\\u${c.toString(16).padStart(4, "0")}u` : message;
      out.length = 0;
      logger.for("t")("info", message);
      logger.fatal(message);
      if (!out[0]!.endsWith(` t: ${expected}`)) wrong.push(`U+${c.toString(16)} in a line`);
      if (out[1] !== `audio-agent: ${expected}`) wrong.push(`U+${c.toString(16)} in the failure line`);
    }
    expect(wrong).toEqual([]);
  });

  test("a backslash not before u stays as it is: a value the message quotes as JSON reads as JSON", async () => {
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "text", write: (line) => out.push(line) });
    logger.fatal(`--sink-pipe-bytes ${JSON.stringify('x\ny"\\')} is not allowed`);
    expect(out).toEqual(['audio-agent: --sink-pipe-bytes "x\\ny\\"\\\\" is not allowed']);
    // JSON lines carry the message as it is: JSON's own escaping, nothing of the text lines'.
    const json: string[] = [];
    const message = 'a\nb\\u000a"\u0000';
    new Logger({ level: "info", format: "json", write: (line) => json.push(line) }).for("t")("info", message);
    expect(JSON.parse(json[0]!).msg).toBe(message);
    const bad = await runAgent(["input", "serve", "--socket", setup().path("i.sock"), "--sink", "/dev/null", "--sink-pipe-bytes", "x\ny"]);
    expect(bad).toEqual({ code: 2, stdout: "", stderr: 'audio-agent: --sink-pipe-bytes "x\\ny" is not allowed: 0 or bytes 4096..1048576\n' });
  });

  test("a config file of NUL bytes, a source path with a newline: each failure is one line naming them escaped", async () => {
    const dir = setup();
    const nul = dir.path("nul.json");
    writeFileSync(nul, new Uint8Array(3));
    const bad = await runAgent(["output", "serve", "--config", nul, "--source", "-"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(`audio-agent: config ${nul}: not valid JSON (JSON Parse error: Unrecognized token '\\u0000') at line 1, column 1\n`);
    const newline = dir.path("a\nb.opus");
    const missing = await runAgent(["output", "serve", "--socket", dir.path("o.sock"), "--source", newline]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trimEnd().split("\n").at(-1)).toBe(`audio-agent: --source ${dir.path("a\\u000ab.opus")}: no such file (ENOENT)`);
    // A path that holds the text "\u000a" reads as that, not as the path with a newline.
    const lookalike = await runAgent(["output", "serve", "--socket", dir.path("o.sock"), "--source", dir.path("a\\u000ab.opus")]);
    expect(lookalike.code).toBe(1);
    expect(lookalike.stderr.trimEnd().split("\n").at(-1)).toBe(`audio-agent: --source ${dir.path("a\\u005cu000ab.opus")}: no such file (ENOENT)`);
  });
});

describe("text values, every UTF-16 code unit", () => {
  function valueText(value: unknown): string {
    const out: string[] = [];
    new Logger({ level: "info", format: "text", write: (line) => out.push(line) }).for("t")("info", "m", { k: value });
    return out[0]!.slice(out[0]!.indexOf(" k=") + 3);
  }

  test("quoted exactly when it holds what \\s matches, a quote, = or a control; no raw control, NEL or line separator inside the quotes", () => {
    const wrong: string[] = [];
    for (let c = 0; c < 0x10000; c++) {
      const value = `a${String.fromCharCode(c)}b`;
      const written = valueText(value);
      const control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
      const quote = /[\s"=]/.test(value) || control;
      if ((written !== value) !== quote) wrong.push(`U+${c.toString(16)} ${quote ? "not quoted" : "quoted"}`);
      if (quote && JSON.parse(written) !== value) wrong.push(`U+${c.toString(16)} does not read back`);
      if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(written)) wrong.push(`U+${c.toString(16)} written raw`);
    }
    expect(wrong).toEqual([]);
  });

  test("a value JSON cannot write (a function, a symbol, a BigInt, a cycle) is still written, and the line with it", () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(valueText(Symbol("s"))).toBe("Symbol(s)");
    expect(valueText(10n)).toBe("10");
    expect(valueText(cycle)).toBe('"[object Object]"');
    expect(valueText(() => 1)).toBe('"() => 1"');
    // Numbers as JavaScript writes them: NaN and Infinity as themselves (JSON would say null).
    expect([NaN, Infinity, -0, 1e21, 0.001, true].map(valueText)).toEqual(["NaN", "Infinity", "0", "1e+21", "0.001", "true"]);
  });
});

describe("levels", () => {
  test("each threshold writes its level and those above, never one below; JSON carries pino's numbers", () => {
    const PINO: Record<string, number> = { debug: 20, info: 30, warn: 40, error: 50 };
    for (const [at, threshold] of LOG_LEVELS.entries()) {
      for (const format of ["text", "json"] as const) {
        const out: string[] = [];
        const log = new Logger({ level: threshold, format, write: (line) => out.push(line) }).for("t");
        for (const level of LOG_LEVELS) log(level, `a ${level} line`);
        const written = format === "json" ? out.map((line) => JSON.parse(line).level) : out.map((line) => / ([A-Z]+) +t: /.exec(line)![1]!.toLowerCase());
        const expected = LOG_LEVELS.slice(at);
        expect({ threshold, format, written }).toEqual({ threshold, format, written: format === "json" ? expected.map((l) => PINO[l]) : expected });
      }
    }
  });
});

describe("rate limit per kind of line", () => {
  function capture(lines = 5, windowMs = 300) {
    const out: string[] = [];
    const logger = new Logger({ level: "debug", format: "text", write: (line) => out.push(line), rateLimit: { lines, windowMs } });
    return { out, logger };
  }

  test("a flood of one kind is cut to the limit, then one summary naming it; another kind is not starved", async () => {
    const { out, logger } = capture();
    const server = logger.for("input-server");
    for (let i = 0; i < 25; i++) {
      server("info", "client disconnected", { client: i });
      server("warn", "framing violation from client; disconnecting", { client: i });
    }
    server("error", "cannot write", { n: 1 });
    expect(out.filter((l) => l.includes("client disconnected")).length).toBe(5);
    expect(out.filter((l) => l.includes("framing violation")).length).toBe(5);
    expect(out.filter((l) => l.includes("ERROR input-server: cannot write n=1")).length).toBe(1);
    expect(out.length).toBe(11);

    await until(() => out.length === 13, "the two summaries", 5000);
    const summaries = out.slice(11);
    expect(summaries).toContainEqual(expect.stringMatching(/ INFO  input-server: 20 more "client disconnected" lines in the last \d+(\.\d)? s suppressed=20$/));
    expect(summaries).toContainEqual(
      expect.stringMatching(/ WARN  input-server: 20 more "framing violation from client; disconnecting" lines in the last \d+(\.\d)? s suppressed=20$/),
    );
    // The cannot-write window held nothing back: no summary for it.
    await Bun.sleep(400);
    expect(out.length).toBe(13);

    // A new window: lines of the kind are written again.
    server("info", "client disconnected", { client: 99 });
    expect(out.at(-1)).toContain("client disconnected client=99");
  });

  test("by default (as README says) 10 lines of a kind are written in a window of 10 s, the 11th is held back", () => {
    expect(DEFAULT_LOG_RATE_LIMIT).toEqual({ lines: 10, windowMs: 10_000 });
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "text", write: (line) => out.push(line) });
    for (let i = 0; i < 11; i++) logger.for("output-client")("info", "reconnected", { n: i });
    expect(out.length).toBe(10);
    logger.flush();
    expect(out.at(-1)).toMatch(/output-client: 1 more "reconnected" lines in the last \d+(\.\d)? s suppressed=1$/);
  });

  test("the same message from another component is another kind", () => {
    const { out, logger } = capture(2);
    for (let i = 0; i < 5; i++) {
      logger.for("output-client")("info", "disconnected");
      logger.for("input-client")("info", "disconnected");
    }
    expect(out.filter((l) => l.includes("output-client: disconnected")).length).toBe(2);
    expect(out.filter((l) => l.includes("input-client: disconnected")).length).toBe(2);
  });

  test("flush() writes what is held back at once (at exit); the failure line is never held back", () => {
    const { out, logger } = capture(1, 60_000);
    for (let i = 0; i < 4; i++) logger.for("output-client")("info", "reconnected");
    for (let i = 0; i < 3; i++) logger.fatal("gone");
    logger.flush();
    expect(out.filter((l) => l === "audio-agent: gone").length).toBe(3);
    expect(out.at(-1)).toMatch(/output-client: 3 more "reconnected" lines in the last \d+(\.\d)? s suppressed=3$/);
    logger.flush();
    expect(out.length).toBe(5);
  });

  test("the failure line is written `always`, text or JSON: a full backlog on a stalled log reader must not lose it", () => {
    for (const format of ["text", "json"] as const) {
      const calls: [string, boolean | undefined][] = [];
      const logger = new Logger({ level: "info", format, write: (line, always) => calls.push([line, always]) });
      logger.for("t")("info", "a line");
      logger.fatal("gone");
      expect(calls.map(([, always]) => always === true)).toEqual([false, true]);
    }
  });

  test("JSON summaries keep pino's shape", () => {
    const out: string[] = [];
    const logger = new Logger({ level: "info", format: "json", write: (line) => out.push(line), rateLimit: { lines: 1, windowMs: 60_000 } });
    logger.for("output-server")("warn", "client stuck");
    logger.for("output-server")("warn", "client stuck");
    logger.flush();
    const summary = JSON.parse(out.at(-1)!);
    expect(summary).toMatchObject({ level: 40, component: "output-server", suppressed: 1, msg: expect.stringMatching(/^1 more "client stuck" lines/) });
  });
});
