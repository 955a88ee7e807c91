import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import {
  checkServeSockets,
  commandFlags,
  ConfigError,
  configText,
  DEFAULT_CONFIG_FILE,
  environmentWarnings,
  loadConfigFile,
  namedConfigFile,
  OPTIONS,
  readFlags,
  readValue,
  resolveServeSettings,
  resolveSettings,
  ROLE_OPTIONS,
  settingOrigin,
  shownValue,
  withOrigins,
  writtenValue,
  type Channel,
  type Command,
  type ConfigFile,
  type ConfigSources,
  type FlagSpecs,
  type Role,
  type ServeSettings,
} from "../config.ts";
import { UnsafeSinkError } from "../media/sink-path.ts";
import { appendFlag, FileFormatError } from "../media/file-format.ts";
import { HttpListenError } from "../observe/http-listen-error.ts";
import { stderrLines } from "../observe/line-writer.ts";
import { Logger, writeText, type LogFormat } from "../observe/logger.ts";
import { ProtocolError } from "../protocol/index.ts";
import { SocketPathError } from "../transport/socket-file.ts";
import { ConnectError, ConnectTimeoutError } from "../transport/unix-client.ts";
import { refuseNonUtf8 } from "./argument-bytes.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, refuseExtra, StdoutError, UsageError } from "./errors.ts";
import { CHANNEL_HELP, roleHelp, TOP_HELP } from "./help.ts";
import { Shutdown } from "../roles/shutdown.ts";
import { capStderr, keepPaceOnStderr } from "../roles/standard-streams.ts";
import { versionLine } from "./version.ts";

type RoleMain = (settings: never, logger: Logger, shutdown: Shutdown) => Promise<void>;

/**
 * Each role's module is loaded only when that role runs: a process plays one
 * role, and loading them all (and the benchmark) cost start-up time.
 */
const ROLES: Record<Command, () => Promise<RoleMain>> = {
  "output serve": async () => (await import("../roles/output-serve.ts")).outputServe,
  "output recv": async () => (await import("../roles/output-recv.ts")).outputRecv,
  "input serve": async () => (await import("../roles/input-serve.ts")).inputServe,
  "input send": async () => (await import("../roles/input-send.ts")).inputSend,
  serve: async () => (await import("../roles/serve.ts")).serve,
};

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

const defaultIo: CliIo = {
  // What a command prints is its result (config print > file): lost, the exit code must say so.
  out: (text) => {
    const lost = writeText(1, text);
    if (lost !== undefined) throw new StdoutError(lost);
  },
  // Through the log's own writer, so that a message keeps its place among the log's lines.
  err: (text) => stderrLines().write(text),
  env: process.env,
};

/** What a run has set up so far: a failure is described with its settings and written with its logger once there are. */
interface Run {
  settings?: Record<string, unknown>;
  logger?: Logger;
  /** The config file, once read: a pipe's cannot be read again for a failure's log format. */
  configFile?: ConfigFile;
  /** The environment's names that do nothing, until logged: before a failure's line too (a misspelt name may be its cause). */
  warnings?: string[];
}

/** Logs the run's warnings not logged yet. */
function warnOnce(run: Run, logger: Logger): void {
  for (const warning of run.warnings ?? []) logger.log("agent", "warn", warning);
  run.warnings = undefined;
}

/** Runs one command line (without the program name); resolves with the exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const run: Run = {};
  try {
    const code = await dispatch(argv, io, run);
    run.logger?.flush();
    await logWritten(io);
    return code;
  } catch (e) {
    const { code, message } = describeFailure(e, run.settings, run.configFile?.path);
    run.logger?.flush();
    // Warnings and the failure's line; at "warn", since nothing else goes through it.
    const logger = run.logger ?? new Logger({ level: "warn", format: requestedLogFormat(argv, io.env, run.configFile), write: writeLine(io) });
    warnOnce(run, logger);
    logger.fatal(message, { exit_code: code });
    await logWritten(io);
    return code;
  }
}

/** A log file's last lines, written in the thread pool, on its disk before the process exits (LineWriter.settled). */
function logWritten(io: CliIo): Promise<void> {
  return io === defaultIo ? stderrLines().settled() : Promise.resolve();
}

/** Where a logger writes: the process's stderr is the Logger's own default (stderrLines, lines lost told in the log's format). */
function writeLine(io: CliIo): ((line: string) => void) | undefined {
  return io === defaultIo ? undefined : (line) => io.err(line + "\n");
}

/**
 * The log format a command line asks for, read directly from its flag, its
 * environment variable or its config file (as fileLogFormat reads it), with
 * the settings' precedence: a run that fails before its settings are resolved
 * (a bad flag, say) still ends with a line in that format. A config file that
 * cannot be read asks for nothing, and so does one that is not a regular
 * file, unless the run read it already (`read`): a pipe read again would wait
 * for a writer that may never come.
 */
function requestedLogFormat(argv: string[], env: CliIo["env"], read?: ConfigFile): LogFormat {
  const flag = (name: string) => {
    let value: string | undefined;
    argv.forEach((arg, i) => {
      if (arg === `--${name}`) value = argv[i + 1];
      else if (arg.startsWith(`--${name}=`)) value = arg.slice(name.length + 3);
    });
    return value;
  };
  const value =
    flag("log-format") ??
    (env.AUDIO_AGENT_LOG_FORMAT || undefined) ??
    // An empty --config, refused, names no file: the environment's or the default is the one to read.
    fileLogFormat(read ?? plainConfigFile(namedConfigFile(flag("config") || undefined, env) ?? DEFAULT_CONFIG_FILE), argv[0]);
  return readValue("log-format", value) === "json" ? "json" : "text";
}

/**
 * "log-format" as a config file gives it to `command`: a channel's role reads
 * its channel's section, then the top level; serve takes a section's
 * process-wide option for the whole process (as resolveServeSettings does),
 * so either section's, then the top level.
 */
function fileLogFormat(file: Pick<ConfigFile, "top" | "sections"> | undefined, command: string | undefined): unknown {
  const channels: Channel[] = command === "serve" ? ["output", "input"] : command === "output" || command === "input" ? [command] : [];
  for (const channel of channels) {
    const value = file?.sections[channel]?.["log-format"];
    if (value !== undefined) return value;
  }
  return file?.top["log-format"];
}

/**
 * A regular JSON file's settings, read without the file's other checks: a
 * file that fails them for another key still has its failure line in the
 * format it asks for.
 */
function plainConfigFile(path: string): Pick<ConfigFile, "top" | "sections"> | undefined {
  try {
    if (!statSync(path).isFile()) return undefined;
    // Unchecked: its sections are its "output" and "input" keys, whatever they hold.
    const json = JSON.parse(configText(readFileSync(path), path)) ?? {};
    return { top: json, sections: json };
  } catch {
    return undefined; // not there, not readable, not UTF-8, not JSON: text
  }
}

async function dispatch(argv: string[], io: CliIo, run: Run): Promise<number> {
  refuseNonUtf8(argv, io.env);
  const [first, second] = argv;
  if (first === "--version" || first === "-V" || first === "version") {
    refuseExtra(first, argv.slice(1), "--help");
    io.out(versionLine() + "\n");
    return EXIT_OK;
  }
  // Help asked for goes to stdout; help instead of a command missing is a usage error: stderr, exit 2, stdout left empty.
  if (first === undefined) {
    io.err(TOP_HELP);
    return EXIT_USAGE;
  }
  // `help COMMAND...` is `COMMAND... --help`, as with git and go; `help` alone is --help.
  if (first === "help" && second !== undefined && !isHelp(second)) return dispatch([...argv.slice(1), "--help"], io, run);
  if (isHelp(first)) {
    // `help help` (or `help --help`) is help about help: the usage, which says it.
    const asked = first === "help" && second !== undefined ? 2 : 1;
    refuseExtra(argv.slice(0, asked).join(" "), argv.slice(asked), "--help");
    io.out(TOP_HELP);
    return EXIT_OK;
  }
  if (first === "config") return (await import("./config-command.ts")).configCommand(argv.slice(1), io);
  if (first === "bench") return (await import("../bench/bench.ts")).bench(argv.slice(1), { out: io.out });
  if (first === "serve") return runCommand("serve", argv.slice(1), io, run);
  if (first !== "output" && first !== "input") {
    throw new UsageError(`unknown command ${shownValue(first)}; allowed: output, input, serve, config, bench (see --help)`);
  }
  if (second === undefined) {
    io.err(CHANNEL_HELP[first]);
    return EXIT_USAGE;
  }
  if (second === "--help" || second === "-h") {
    refuseExtra(`${first} ${second}`, argv.slice(2), `audio-agent ${first} --help`);
    io.out(CHANNEL_HELP[first]);
    return EXIT_OK;
  }
  const role = `${first} ${second}` as Role;
  if (!(role in ROLE_OPTIONS)) {
    const allowed = first === "output" ? "serve, recv" : "serve, send";
    throw new UsageError(`unknown ${first} command ${shownValue(second)}; allowed: ${allowed}`);
  }
  return runCommand(role, argv.slice(2), io, run);
}

function isHelp(word: string): boolean {
  return word === "--help" || word === "-h" || word === "help";
}

async function runCommand(command: Command, args: string[], io: CliIo, run: Run): Promise<number> {
  const flags = parseFlags(command, args);
  if (flags.help) {
    io.out(roleHelp(command));
    return EXIT_OK;
  }
  run.warnings = environmentWarnings(io.env, command);
  const file = await loadConfigFile(namedConfigFile(flags.config, io.env));
  run.configFile = file;
  const sources: ConfigSources = { flags, env: io.env, file };
  const settings = command === "serve" ? resolveServeSettings(sources) : resolveSettings(command, sources);
  if (command === "serve") checkServeSockets(settings as ServeSettings, sources);
  run.settings = command === "serve" ? flatServeSettings(settings as ServeSettings) : settings;
  // The log never waits for its reader, whoever's its pipe is.
  if (io === defaultIo) keepPaceOnStderr();
  const logger = new Logger({ level: settings["log-level"], format: settings["log-format"], write: writeLine(io) });
  run.logger = logger;
  warnOnce(run, logger);
  const maxLogBytes = settings["log-max-bytes"];
  if (io === defaultIo && maxLogBytes !== undefined) capStderr(maxLogBytes, logger, origins(run.settings, ["log-max-bytes"], file?.path));
  const shutdown = new Shutdown(logger.for("agent"), io.env);
  try {
    const main = await ROLES[command]();
    await main(settings as never, logger, shutdown);
    return EXIT_OK;
  } finally {
    // Run as the process itself (not in another program's), it exits next.
    shutdown.dispose(io === defaultIo);
  }
}

/** serve's settings by flag name ("output-socket", "metrics"), so a failure names the flag it came from, and where it was set. */
function flatServeSettings(settings: ServeSettings): Record<string, unknown> {
  const read = (from: object, option: string) => (from as Record<string, unknown>)[option];
  const flat: Record<string, unknown> = {};
  const origins: Record<string, string | undefined> = {};
  for (const { flag, option, channel } of commandFlags("serve")) {
    const from = channel ? settings[channel] : settings;
    flat[flag] = read(from, option);
    origins[flag] = settingOrigin(from, option);
  }
  return withOrigins(flat, origins);
}

function parseFlags(command: Command, args: string[]): Record<string, unknown> {
  const flags: FlagSpecs = { help: { type: "boolean", short: "h" }, config: { type: "string", allowed: "a JSON file" } };
  for (const { flag, option } of commandFlags(command)) flags[flag] = { type: OPTIONS[option].flag, allowed: OPTIONS[option].allowed };
  const { values, positionals } = readFlags(args, flags, command);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${shownValue(positionals[0])} (see audio-agent ${command} --help)`);
  return values;
}

function describeFailure(e: unknown, settings: Record<string, unknown> = {}, configPath?: string): { code: number; message: string } {
  if (e instanceof UsageError || e instanceof ConfigError) return { code: EXIT_USAGE, message: e.message };
  if (e instanceof FileFormatError) {
    const flag = formatFlagOf(settings, e.end, e.path);
    const appendSetAt = e.end === "sink" ? origins(settings, [appendFlag(flag).slice(2)], configPath) : "";
    return { code: EXIT_USAGE, message: e.naming(flag, origins(settings, [flag.slice(2)], configPath), appendSetAt) };
  }
  // A port another process holds is refused like a socket a live server answers on.
  if (e instanceof HttpListenError) {
    // A command run by hand beside the service reads the service's file, whose port the service holds.
    const names = namesSetTo(settings, e.address);
    const from = origins(settings, names, configPath);
    const told = from ? ` (${from}; ${names.map((name) => `--${name} off`).join(" ")} runs without ${names.length > 1 ? "them" : "it"})` : "";
    return { code: EXIT_USAGE, message: `${flagsOf(names)} ${writtenValue("metrics", e.address)}${told}: cannot listen${errnoWords(e.code)}` };
  }
  if (e instanceof SocketPathError) {
    // Named by its option, given or not: the default path of a server run without --socket is one too.
    const option = flagsWithOrigin(settings, e.path, configPath) || "--socket";
    return { code: EXIT_USAGE, message: e.code ? `${option} ${e.path}: cannot listen${errnoWords(e.code)}` : `${option}: ${e.message}` };
  }
  if (e instanceof ConnectTimeoutError || e instanceof ConnectError) {
    // Named by its option, as a server's socket is, and by where it was set when the user never typed it.
    const option = flagsWithOrigin(settings, e.path, configPath);
    return { code: EXIT_FAILURE, message: option ? `${option} ${e.path}: ${e.problem}` : e.message };
  }
  if (e instanceof ProtocolError) return { code: EXIT_FAILURE, message: e.message };
  if (e instanceof StdoutError) return { code: EXIT_FAILURE, message: `stdout: cannot write${errnoWords(e.code)}` };
  const err = e as NodeJS.ErrnoException;
  if (err?.code && err.path) {
    // A source or sink named by its option, and by where it was set when the user never typed it.
    const option = flagsWithOrigin(settings, err.path, configPath);
    const what = option ? `${option} ${err.path}` : err.path;
    const problem = e instanceof UnsafeSinkError ? `${e.problem} (${e.code})` : fileProblem(err.path, err.code);
    return { code: EXIT_FAILURE, message: `${what}: ${problem}` };
  }
  return { code: EXIT_FAILURE, message: err?.message ?? String(e) };
}

/** Settings' names as their flags: "--metrics", or "--metrics and --monitor" when they share a value. */
function flagsOf(names: string[]): string {
  return names.map((name) => `--${name}`).join(" and ");
}

/** The flags set to `value`, with where they were set when the user never typed them ("--source (from environment X)"); "" for none. */
function flagsWithOrigin(settings: Record<string, unknown>, value: unknown, configPath: string | undefined): string {
  const names = namesSetTo(settings, value);
  const from = origins(settings, names, configPath);
  return `${flagsOf(names)}${names.length > 0 && from ? ` (${from})` : ""}`;
}

/** The names of the settings whose value is `value`. */
function namesSetTo(settings: Record<string, unknown>, value: unknown): string[] {
  return Object.keys(settings).filter((name) => sameValue(settings[name], value));
}

/**
 * Where the settings `names` came from when not from their flags or defaults
 * ("from environment JETKVM_AUDIO_OUTPUT_SOCKET", `from config "metrics" in
 * /etc/audio-agent.json`); "" when from their flags or defaults. A value the
 * user never typed is told by where it was set.
 */
function origins(settings: Record<string, unknown>, names: string[], configPath: string | undefined): string {
  const all = names.flatMap((name) => settingOrigin(settings, name) ?? []);
  const keys = all.filter((origin) => origin.startsWith("config ")).map((origin) => origin.slice("config ".length));
  const where = [...new Set(all.filter((origin) => !origin.startsWith("config ")))];
  if (keys.length > 0) where.push(`config ${keys.join(" and ")}${configPath ? ` in ${configPath}` : ""}`);
  return where.length === 0 ? "" : `from ${where.join(" and ")}`;
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || (typeof a === "object" && a !== null && JSON.stringify(a) === JSON.stringify(b));
}

/** The flag that gives the format of the source or sink at `path`: the one beside its flag (--format; serve: --output-format, --input-format). */
function formatFlagOf(settings: Record<string, unknown>, end: "source" | "sink", path: string): string {
  const named = Object.keys(settings).find((name) => name.endsWith(end) && settings[name] === path);
  return named ? `--${named.slice(0, -end.length)}format` : "--format";
}

const ERRNO_WORDS: Record<string, string> = {
  EADDRINUSE: "address in use",
  EADDRNOTAVAIL: "not an address of this machine",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  ENOTDIR: "a parent is not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
  EISDIR: "is a directory",
  EPIPE: "its reader is gone",
  // Not an errno: the resolver's, as Node names it.
  ENOTFOUND: "the host resolves to no address",
};

/** ": address in use (EADDRINUSE)", or " (ECODE)" for an errno without words here. */
function errnoWords(code: string): string {
  const words = ERRNO_WORDS[code];
  return words ? `: ${words} (${code})` : ` (${code})`;
}

/** What went wrong with a file path, naming its directory, or where its symbolic link points, when that is what is missing. */
function fileProblem(path: string, code: string): string {
  if (code === "ENOENT") {
    const link = lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() ? readlinkSync(path) : undefined;
    if (link !== undefined) {
      const linkDir = dirname(resolve(dirname(path), link));
      return `a symbolic link to ${link}, ${existsSync(linkDir) ? "which does not exist" : `whose directory ${linkDir} does not exist`} (ENOENT)`;
    }
    const dir = dirname(path);
    return existsSync(dir) ? `no such file (ENOENT)` : `directory ${dir} does not exist (ENOENT)`;
  }
  // open(2) of a socket file: there is no file behind it to read or write.
  if (code === "ENXIO" && statSync(path, { throwIfNoEntry: false })?.isSocket()) return "a socket, not a file to read or write (ENXIO)";
  // open(2) of a missing "x.opus/" for writing: no directory is there, the trailing slash asks for one.
  if (code === "EISDIR" && path.endsWith("/") && !existsSync(path)) return "ends in /, which names a directory; a file was expected (EISDIR)";
  return (ERRNO_WORDS[code] ?? "failed") + ` (${code})`;
}
