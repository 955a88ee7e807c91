import { writeSync } from "node:fs";
import { stderrLines } from "./line-writer.ts";
import { DEFAULT_LOG_RATE_LIMIT, LogRateLimiter, type LogRateLimit, type SuppressedLines } from "./log-rate-limiter.ts";

export type LogFormat = "text" | "json";
export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** pino's numeric levels (10 trace .. 60 fatal), which the Node ecosystem's log tools read. */
const PINO_LEVEL = { debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;

/** Same shape as the transport layer's Report callback, which the CLI passes down. */
export type LogFunction = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

/** One component's log: the Report lower layers take, and its channel's last line (Logger.last). */
export type ComponentLog = LogFunction & { last: (message: string, fields?: Record<string, unknown>) => void };

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /**
   * Where lines go. By default stderr, so stdout stays free for data (`--sink -`), written
   * without waiting for its reader (stderrLines): a stalled log reader never holds up the audio.
   * `always` marks the failure line, which must not be lost to a full backlog.
   */
  write?: (line: string, always?: boolean) => void;
  /** Lines of one kind per window before the rest are only counted and summarized. */
  rateLimit?: LogRateLimit;
}

/**
 * One structured line per event. Text: time, level, component, message,
 * key=value fields. JSON: pino's shape (numeric `level`, `time` in epoch ms,
 * `pid`, `hostname`, `msg`, then `component` and the fields), so pino-pretty
 * and the like read it as it is. Lines of one kind are rate-limited.
 * `logger.for(component)` gives the Report callback lower layers take, and
 * the component's last line.
 */
export class Logger {
  private readonly threshold: number;
  private readonly write: (line: string, always?: boolean) => void;
  /** Waits (a bounded time) for lines the output could not take yet. */
  private readonly drain: () => void = () => {};
  private readonly limiter: LogRateLimiter<LogLevel>;
  private host: string | undefined;

  constructor(private readonly options: LoggerOptions) {
    this.threshold = LOG_LEVELS.indexOf(options.level);
    if (options.write) {
      this.write = options.write;
    } else {
      const stderr = stderrLines();
      // Lines lost (a reader not reading, a write that failed) are told in the log's own format.
      stderr.lostNotice = (count, why) => this.line("agent", "warn", `${count} log lines lost: ${why}`, { lost: count });
      this.write = (line, always) => stderr.write(line + "\n", always);
      this.drain = () => stderr.drain();
    }
    this.limiter = new LogRateLimiter(options.rateLimit ?? DEFAULT_LOG_RATE_LIMIT, (s) => this.summary(s));
  }

  for(component: string): ComponentLog {
    const log: LogFunction = (level, message, fields) => this.log(component, level, message, fields);
    return Object.assign(log, { last: (message: string, fields?: Record<string, unknown>) => this.last(component, message, fields) });
  }

  log(component: string, level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (LOG_LEVELS.indexOf(level) < this.threshold) return;
    if (!this.limiter.admit(component, level, message)) return;
    this.emit(component, level, message, fields);
  }

  /**
   * A line the agent writes on its own timer (the --stats-interval summary),
   * never held back: its rate is the operator's choice, not a peer's, and
   * each line counts what happened since the one before, so none may be missing.
   */
  periodic(component: string, message: string, fields?: Record<string, unknown>): void {
    this.unheld(component, "info", message, fields);
  }

  /**
   * A line never held back, whose rate something else bounds: the log's
   * turn at --log-max-bytes (one per so many bytes of log) tells in the
   * emptied file's first line what the turn lost, at every turn.
   */
  unheld(component: string, level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (LOG_LEVELS.indexOf(level) >= this.threshold) this.emit(component, level, message, fields);
  }

  /**
   * A channel's last line, its "stopped" accounting: the summaries of the
   * lines held back are written before it (not up to a window later, or at
   * exit, after it), and it is never held back itself.
   */
  last(component: string, message: string, fields?: Record<string, unknown>): void {
    this.limiter.flush();
    this.periodic(component, message, fields);
  }

  /**
   * The line a failed run ends with, never held back. Text keeps the
   * command line's `audio-agent: message`; JSON is a pino fatal (60) line.
   */
  fatal(message: string, fields?: Record<string, unknown>): void {
    if (this.options.format === "json") this.write(this.json("agent", "fatal", message, fields), true);
    else this.write(`audio-agent: ${oneLine(message)}`, true);
    this.drain();
  }

  /** Writes the summaries of lines still held back, and waits for what the output has not taken yet (at exit). */
  flush(): void {
    this.limiter.flush();
    this.drain();
  }

  private summary({ component, message, level, count, windowMs }: SuppressedLines<LogLevel>): void {
    const seconds = +(windowMs / 1000).toFixed(1);
    this.emit(component, level, `${count} more ${JSON.stringify(message)} lines in the last ${seconds} s`, {
      suppressed: count,
    });
  }

  private emit(component: string, level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    this.write(this.line(component, level, message, fields));
  }

  /** One line of the log's format. */
  private line(component: string, level: LogLevel, message: string, fields?: Record<string, unknown>): string {
    if (this.options.format === "json") return this.json(component, level, message, fields);
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${oneLine(message)}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
      }
    }
    return line;
  }

  private json(component: string, level: keyof typeof PINO_LEVEL, message: string, fields?: Record<string, unknown>): string {
    const head = { level: PINO_LEVEL[level], time: Date.now(), pid: process.pid, hostname: (this.host ??= hostName()), msg: message, component };
    // The fields follow, but never replace what a log tool reads first; JSON.stringify leaves out undefined ones.
    return JSON.stringify(Object.assign({ ...head }, fields, head));
  }
}

function formatValue(value: unknown): string {
  const text = textOf(value);
  return needsQuotes(text) ? quoted(text) : text;
}

/** A field's value as text; never throws (a log line must not fail the code that writes it). */
function textOf(value: unknown): string {
  if (typeof value === "string") return value;
  // Most fields are numbers (every stats line's): String, not JSON's code, which a process then
  // need not keep resident (bench/FINDINGS.md); NaN and Infinity read as themselves, not null.
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  try {
    // undefined for a function or a symbol; a BigInt or a cycle throws.
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * JSON's escaping, and also of what JSON leaves raw but some readers take for
 * a line break or a control: DEL, the C1 controls (U+0085 is NEL) and the
 * line and paragraph separators U+2028 and U+2029.
 */
function quoted(text: string): string {
  return escaped(JSON.stringify(text), leftRawByJson);
}

/**
 * A text line's message as one line that shows what it holds: a control
 * character (a newline in a path, a NUL in a config file's parse error) or
 * what JSON leaves raw is written as \uXXXX, and so is a backslash that
 * begins "\u", so that a path holding the text "\u000a" never reads as one
 * that held a newline. Other backslashes stay, so a value the message quotes
 * as JSON ("a\nb") reads as JSON.
 */
export function oneLine(message: string): string {
  return escaped(message, (c, i) => isControl(c) || (c === 0x5c && message.charCodeAt(i + 1) === 0x75));
}

/** `text` with each code unit that `escape` picks (by the unit, and where it is) written as \uXXXX. */
function escaped(text: string, escape: (c: number, at: number) => boolean): string {
  let out = "";
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (escape(c, i)) {
      out += text.slice(from, i) + "\\u" + c.toString(16).padStart(4, "0");
      from = i + 1;
    }
  }
  return from === 0 ? text : out + text.slice(from);
}

/** A C0 control, or what JSON leaves raw (below). */
function isControl(c: number): boolean {
  return c < 0x20 || leftRawByJson(c);
}

/** DEL, a C1 control (U+0085 is NEL), or U+2028/U+2029: JSON.stringify leaves them raw. */
function leftRawByJson(c: number): boolean {
  return (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029;
}

/** What JavaScript's \s matches above ASCII: the Unicode spaces, line and paragraph separators, BOM. */
const UNICODE_SPACES = new Set([0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff]);

/**
 * A text value is quoted (JSON-escaped) when it holds a space, a control
 * character, a quote or "=": a key=value line must stay one line that splits
 * back into its fields. A loop, not a regex: every process logs, and the regex
 * engine's code would stay resident in it (bench/FINDINGS.md).
 */
function needsQuotes(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x22 || c === 0x3d || isControl(c) || UNICODE_SPACES.has(c)) return true;
  }
  return false;
}

/**
 * Writes text to a file descriptor (1: stdout, 2: stderr) synchronously: the
 * order of lines, and the last ones before an exit, are kept. node:fs rather
 * than process.stdout/stderr: the stream machinery behind them costs every
 * process megabytes, and its first write several milliseconds of start-up.
 * Returns the error code (EAGAIN: a pipe full for a second) where text was lost.
 */
export function writeText(fd: number, text: string): string | undefined {
  const bytes = Buffer.from(text);
  let at = 0;
  for (let tries = 0; at < bytes.length && tries < 1000; tries++) {
    try {
      at += writeSync(fd, bytes, at, bytes.length - at);
    } catch (e) {
      // A non-blocking pipe that is full: wait a moment; anything else: the text is lost.
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (code !== "EAGAIN") return code;
      Bun.sleepSync(1);
    }
  }
  return at < bytes.length ? "EAGAIN" : undefined;
}

/** The machine's name for JSON lines, read only in JSON mode (node:os costs memory). */
function hostName(): string {
  try {
    return (require("node:os") as typeof import("node:os")).hostname();
  } catch {
    return "localhost";
  }
}
