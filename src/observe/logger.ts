export type LogFormat = "text" | "json";
export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Same shape as the transport layer's Report callback, which the CLI passes down. */
export type LogFunction = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go; stderr by default so stdout stays free for data (`--sink -`). */
  write?: (line: string) => void;
}

/**
 * One structured line per event: level, time, component, message, fields.
 * `logger.for(component)` gives the Report callback lower layers take.
 */
export class Logger {
  private readonly threshold: number;
  private readonly write: (line: string) => void;

  constructor(private readonly options: LoggerOptions) {
    this.threshold = LOG_LEVELS.indexOf(options.level);
    this.write = options.write ?? ((line) => process.stderr.write(line + "\n"));
  }

  for(component: string): LogFunction {
    return (level, message, fields) => this.log(component, level, message, fields);
  }

  log(component: string, level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (LOG_LEVELS.indexOf(level) < this.threshold) return;
    const time = new Date().toISOString();
    if (this.options.format === "json") {
      // JSON.stringify leaves out undefined fields by itself.
      this.write(JSON.stringify({ level, time, component, msg: message, ...fields }));
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} ${component}: ${message}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
      }
    }
    this.write(line);
  }
}

function formatValue(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}
