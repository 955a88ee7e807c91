import { closeSync, openSync, readFileSync, readSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import * as v from "valibot";
import { MAX_SOCKET_DIRECTORY, MAX_SOCKET_PATH, OPUS_SAMPLE_RATES, type Channel } from "./protocol/index.ts";

/**
 * Every setting of every role, one row per option: the flag (`--queue-frames`,
 * also the config-file key `"queue-frames"`, top level or inside an
 * "output"/"input" section), how it is validated, its default, whether a role
 * that reads it requires it, and its environment variable
 * (`AUDIO_AGENT_QUEUE_FRAMES`; the sockets take JetKVM's
 * JETKVM_AUDIO_OUTPUT_SOCKET / _INPUT_SOCKET instead).
 * Precedence: flags > environment > file section > file top level > defaults.
 */

export type { Channel };
export type Role = "output serve" | "output recv" | "input serve" | "input send";

interface OptionSpec {
  /** How the command line gives it: a value, or a switch. */
  flag: "string" | "boolean";
  help: string;
  /** What is allowed, for error messages. */
  allowed: string;
  /** Validates (and converts text from flags and env into) the value. */
  schema: v.GenericSchema<unknown, unknown>;
  /** The value when nothing sets it; per channel where the channels differ. */
  default?: unknown;
  /** Every role that reads the option needs a value (there is no default). */
  required?: true;
  /** What leaving it unset means, shown as its default where it has none (--help). */
  unset?: string;
  /** The environment variable, when it is not AUDIO_AGENT_<NAME>; per channel where they differ. */
  env?: Record<Channel, string>;
  /** Writes a validated value back as a flag or config file gives it, where the two differ (a mode, an address). */
  written?: (value: unknown) => string;
  /** A file's path: read as given, blanks around it too (readSchema), since a file's name may begin or end with one. */
  verbatim?: true;
}

export interface SocketBufferSizes {
  sendBytes: number;
  receiveBytes: number;
}

export type SocketBufferPreset = "default" | "high-load";

const KiB = 1024;
/** Smallest and largest socket buffer size (bytes) accepted from configuration. */
export const MIN_SOCKET_BUFFER_BYTES = 32 * KiB;
export const MAX_SOCKET_BUFFER_BYTES = 256 * KiB;

/** SO_SNDBUF/SO_RCVBUF requested per preset, as the Go original's SocketBufferConfig (the kernel reports double). */
export const SOCKET_BUFFER_PRESETS: Readonly<Record<SocketBufferPreset, Readonly<SocketBufferSizes>>> = Object.freeze({
  default: Object.freeze({ sendBytes: 128 * KiB, receiveBytes: 128 * KiB }),
  "high-load": Object.freeze({ sendBytes: 256 * KiB, receiveBytes: 256 * KiB }),
});

/** The sizes a --socket-buffers value asks for. */
export function socketBufferSizes(setting: SocketBufferPreset | number): SocketBufferSizes {
  return typeof setting === "number" ? { sendBytes: setting, receiveBytes: setting } : { ...SOCKET_BUFFER_PRESETS[setting] };
}

/**
 * A schema built the first time something is validated with it. Start-up then
 * builds only the schemas of the settings it is given: valibot's objects for
 * every option, built at load, were about 2 ms of a slow machine's start-up.
 */
function onFirstUse<const T extends v.GenericSchema>(build: () => T): v.LazySchema<T> {
  let schema: T | undefined;
  return v.lazy(() => (schema ??= build()));
}

/** Accepts a finite number, or decimal text (flags and env are text); not "0x10" or "1e3", nor one of 400 digits (Infinity). */
const numberLike = onFirstUse(() =>
  v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(?:\.\d+)?$/), v.transform(Number))]), v.finite()),
);

/**
 * Accepts an integer, or its decimal text ("5", "5.0"): not the text of a
 * fraction, even one Number() rounds to an integer ("5.0000000000000001" is 5).
 */
const integerLike = onFirstUse(() =>
  v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(?:\.0+)?$/), v.transform(Number))]), v.finite(), v.integer()),
);

function integer(min: number, max: number): v.GenericSchema<unknown, number> {
  return onFirstUse(() => v.pipe(integerLike, v.number(), v.minValue(min), v.maxValue(max)));
}

const booleanLike = onFirstUse(() =>
  v.union([
    v.boolean(),
    v.pipe(
      v.picklist(["true", "false", "1", "0", "on", "off", "yes", "no"]),
      v.transform((s) => ["true", "1", "on", "yes"].includes(s)),
    ),
  ]),
);

function choice<const T extends readonly [string, ...string[]]>(values: T) {
  return v.picklist(values);
}

/** A file's path (or "-"): not empty, and without a NUL byte, which no file's name has (only a config file's JSON can give one). */
const text = onFirstUse(() => v.pipe(v.string(), v.nonEmpty(), v.excludes("\0")));

/** "0660" (octal) -> 0o660; a config file's number too, its digits read as octal as written (660 -> 0o660, 0 -> 0o000). */
const fileMode = onFirstUse(() =>
  v.pipe(
    v.union([v.string(), v.pipe(v.number(), v.integer(), v.transform((n) => String(n).padStart(3, "0")))]),
    v.regex(/^0?[0-7]{3}$/),
    v.transform((m) => parseInt(m, 8)),
  ),
);

/** A socket path: a file's path that fits sun_path and names a file (a trailing "/" names a directory, where no socket can be). */
const socketPath = onFirstUse(() => v.pipe(text, v.check((path) => Buffer.byteLength(path) <= MAX_SOCKET_PATH && !path.endsWith("/"))));

/** The roles that listen on their socket: bound under a hidden name first, which needs room in sun_path beside it. */
const LISTENING = new Set(["output serve", "input serve", "serve"]);

/** 0o660 -> "0660". */
const octal = (mode: unknown) => `0${(mode as number).toString(8).padStart(3, "0")}`;

/** { host: "::1", port: 9100 } -> "[::1]:9100"; false -> "off". */
function hostPort(address: unknown): string {
  if (address === false) return "off";
  const { host, port } = address as { host: string; port: number };
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/**
 * "HOST:PORT", ":PORT" or "PORT"; without a host, loopback. "off" (false):
 * none, whatever a lower source says (a command run by hand beside the
 * service, whose config file's address the service holds).
 */
const listenAddress = onFirstUse(() =>
  v.union([
    v.pipe(v.literal("off"), v.transform(() => false as const)),
    v.pipe(
      v.union([v.pipe(v.number(), v.transform(String)), v.string()]),
      v.regex(/^(?:(\[[0-9a-fA-F:]+\]|[\w.-]*):)?\d{1,5}$/),
      v.transform((s) => {
        const at = s.lastIndexOf(":");
        const host = at <= 0 ? "127.0.0.1" : s.slice(0, at).replace(/^\[|\]$/g, "");
        return { host, port: Number(s.slice(at + 1)) };
      }),
      v.check((a) => a.port >= 0 && a.port <= 65535),
    ),
  ]),
);

/**
 * Host names (as a browser sends them in Host) the HTTP endpoints answer to
 * besides their own address: "NAME[:PORT],..." or a list; IPv6 in brackets.
 * Lower-cased; a name without a port is completed by the server.
 */
const hostNames = onFirstUse(() =>
  v.pipe(
    v.union([v.pipe(v.string(), v.transform((s) => s.split(","))), v.array(v.string())]),
    v.transform((names) => names.map((name) => name.trim().toLowerCase()).filter((name) => name !== "")),
    v.check((names) =>
      names.every((name) => {
        const match = /^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/.exec(name);
        return match !== null && (match[1] === undefined || (Number(match[1]) >= 1 && Number(match[1]) <= 65535));
      }),
    ),
  ),
);

/** "default", "high-load", or a size in bytes ("196608", "192k") within the kernel-sane bounds. */
const socketBuffers = onFirstUse(() =>
  v.pipe(
    v.union([v.number(), v.string()]),
    v.transform((x): SocketBufferPreset | number => {
      if (typeof x === "number") return x;
      if (x in SOCKET_BUFFER_PRESETS) return x as SocketBufferPreset;
      const m = /^(\d+)\s*(k|kib)?$/i.exec(x);
      return m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
    }),
    v.union([
      v.picklist(Object.keys(SOCKET_BUFFER_PRESETS) as SocketBufferPreset[]),
      v.pipe(v.number(), v.integer(), v.minValue(MIN_SOCKET_BUFFER_BYTES), v.maxValue(MAX_SOCKET_BUFFER_BYTES)),
    ]),
  ),
);

export const OPTIONS = {
  socket: { flag: "string", help: "Unix socket path", allowed: `a file's path of at most ${MAX_SOCKET_PATH} bytes`, schema: socketPath, default: { output: "/var/run/audio_output.sock", input: "/var/run/audio_input.sock" }, env: { output: "JETKVM_AUDIO_OUTPUT_SOCKET", input: "JETKVM_AUDIO_INPUT_SOCKET" }, verbatim: true },
  source: { flag: "string", help: 'frames to send: a file, or "-" for stdin', allowed: 'a path or "-"', schema: text, required: true, verbatim: true },
  sink: { flag: "string", help: 'where received frames go: a file, "-" for stdout, or a FIFO (input serve: a player, never waited for; in serve also stdout to a pipe or socket)', allowed: 'a path or "-"', schema: text, required: true, verbatim: true },
  format: { flag: "string", help: "wire (the IPC byte stream) or ogg (Ogg Opus)", allowed: "wire, ogg", schema: choice(["wire", "ogg"]), default: "wire" },
  realtime: { flag: "boolean", help: "pace a file source by its timestamps/durations; drop what no client takes", allowed: "true, false", schema: booleanLike, default: false },
  loop: { flag: "boolean", help: "replay a file source forever (not stdin, read once; a FIFO source already waits for its next writer)", allowed: "true, false", schema: booleanLike, default: false },
  lenient: { flag: "boolean", help: "skip Ogg pages with a bad CRC and bytes that begin no page, go on past missing pages, and drop pages that come again, counting each, instead of failing", allowed: "true, false", schema: booleanLike, default: false },
  count: { flag: "string", help: "exit after receiving N frames", allowed: "an integer 1..9007199254740991", schema: integer(1, Number.MAX_SAFE_INTEGER), unset: "no limit" },
  append: { flag: "boolean", help: "sink: a file already there is added to (an Ogg sink: its next chained stream), where it would be started afresh; a restarted service keeps what it recorded", allowed: "true, false", schema: booleanLike, default: false },
  once: { flag: "boolean", help: "exit when the first connection (session) ends", allowed: "true, false", schema: booleanLike, default: false },
  "connect-timeout": { flag: "string", help: "give up (exit 1) after S seconds without a server", allowed: "seconds, 0.001 or more (a decimal: 2.5)", schema: onFirstUse(() => v.pipe(numberLike, v.number(), v.minValue(0.001))), unset: "wait forever" },
  "socket-mode": { flag: "string", help: "file mode of the socket (octal)", allowed: "octal 000..777, e.g. 0660", schema: fileMode, default: 0o660, written: octal },
  "queue-frames": { flag: "string", help: "send queue bound in frames (the queue also never holds more than 8 MiB)", allowed: "an integer 1..100000", schema: integer(1, 100_000), default: 500 },
  drop: { flag: "string", help: "which frame to drop when the queue is full", allowed: "oldest, newest", schema: choice(["oldest", "newest"]), default: "oldest" },
  "write-deadline-ms": { flag: "string", help: "live mode: drop frames that waited longer than this for room in the socket buffer (0: never)", allowed: "an integer 0..60000", schema: integer(0, 60_000), default: 50 },
  "max-latency-ms": { flag: "string", help: "live mode: latency budget; stop writing while what the peer has not read yet is older than this, drop queued frames older than this", allowed: "an integer 10..60000", schema: integer(10, 60_000), default: 100 },
  "stuck-frames": { flag: "string", help: "live mode: disconnect a client that takes nothing while this many frames are dropped for it", allowed: "an integer 1..100000", schema: integer(1, 100_000), default: 250 },
  "pre-skip": { flag: "string", help: "ogg sink: OpusHead pre-skip in 48 kHz samples", allowed: "an integer 0..65535", schema: integer(0, 65535), default: 312 },
  "page-ms": { flag: "string", help: "sink: write out (an Ogg sink: close a page) at least this often, so live listeners hear audio promptly", allowed: "an integer 1..10000", schema: integer(1, 10_000), default: 100 },
  "sink-pipe-bytes": { flag: "string", help: "a player's pipe (a FIFO sink, or serve's stdout; a socket there: its send buffer): its capacity, so the furthest a player that fell behind stays behind before frames are dropped (0: the kernel's, 64 KiB for a pipe)", allowed: "0 or bytes 4096..1048576", schema: onFirstUse(() => v.pipe(integerLike, v.number(), v.check((n) => n === 0 || (n >= 4096 && n <= 1_048_576)))), default: 8192 },
  "heartbeat-ms": { flag: "string", help: "send a Heartbeat this often", allowed: "an integer 10..60000", schema: integer(10, 60_000), default: 1000 },
  "ack-timeout-ms": { flag: "string", help: "no Ack for this long after a Config or Heartbeat went out: the server is gone, reconnect (live, one that takes nothing: --stuck-frames)", allowed: "an integer 10..600000", schema: integer(10, 600_000), default: 3000 },
  "sample-rate": { flag: "string", help: "Config: sample rate (default from an Ogg source, else 48000)", allowed: "8000, 12000, 16000, 24000, 48000", schema: onFirstUse(() => v.pipe(integerLike, v.picklist(OPUS_SAMPLE_RATES))) },
  channels: { flag: "string", help: "channel count: input send's Config (default from an Ogg source, else 2); output recv's Ogg OpusHead (default 2)", allowed: "1, 2", schema: onFirstUse(() => v.pipe(integerLike, v.picklist([1, 2]))) },
  "frame-size": { flag: "string", help: "Config: samples per channel per frame (default from an Ogg source: its first frame's duration at the Config's rate; else 960)", allowed: "an integer 1..5760", schema: integer(1, 5760) },
  "socket-buffers": { flag: "string", help: "SO_SNDBUF/SO_RCVBUF: default (128 KiB), high-load (256 KiB) or a size", allowed: `default, high-load, or bytes ${MIN_SOCKET_BUFFER_BYTES}..${MAX_SOCKET_BUFFER_BYTES} (32k..256k)`, schema: socketBuffers, default: "default" },
  adaptive: { flag: "string", help: "adaptive optimizer: escalate buffers and queue under pressure, relax when calm", allowed: "on, off", schema: choice(["on", "off"]), default: "on" },
  "adaptive-threshold": { flag: "string", help: "pressure events (overflows, deadline drops) within the window that escalate", allowed: "an integer 1..100000", schema: integer(1, 100_000), default: 10 },
  "adaptive-window-ms": { flag: "string", help: "window in which the threshold counts", allowed: "an integer 10..3600000", schema: integer(10, 3_600_000), default: 5000 },
  "adaptive-calm-ms": { flag: "string", help: "quiet time after which the optimizer relaxes to the defaults", allowed: "an integer 10..3600000", schema: integer(10, 3_600_000), default: 30000 },
  metrics: { flag: "string", help: "serve /metrics and /healthz at HOST:PORT (PORT alone: loopback; off: not at all)", allowed: "HOST:PORT, :PORT, PORT or off", schema: listenAddress, written: hostPort, unset: "off" },
  monitor: { flag: "string", help: "serve the live web monitor at HOST:PORT (PORT alone: loopback; may equal --metrics; off: not at all)", allowed: "HOST:PORT, :PORT, PORT or off", schema: listenAddress, written: hostPort, unset: "off" },
  "stats-interval": { flag: "string", help: "log a summary (frames, bytes, drops by reason, clients, latency p99) of each interval of this many seconds (0: never)", allowed: "0 (off) or seconds 0.1..86400", schema: onFirstUse(() => v.pipe(numberLike, v.number(), v.check((s) => s === 0 || s >= 0.1), v.maxValue(86_400))), default: 60 },
  "http-allow-host": { flag: "string", help: "more names (Host header) --metrics and --monitor answer to, e.g. a DNS name or a tunnel's localhost:PORT; others get 421", allowed: "NAME[:PORT][,NAME[:PORT]...] (IPv6 in brackets, PORT 1..65535)", schema: hostNames, unset: "none" },
  "log-level": { flag: "string", help: "least severe level logged", allowed: "debug, info, warn, error", schema: choice(["debug", "info", "warn", "error"]), default: "info" },
  "log-format": { flag: "string", help: "log line format on stderr", allowed: "text, json", schema: choice(["text", "json"]), default: "text" },
  // At most 64 MiB: the copy is made between two lines, holding the event loop (and the audio) about 0.7 ms a MiB here.
  "log-max-bytes": { flag: "string", help: "a log that is a file appended to (2>>FILE): past this size it is copied to FILE.1 and emptied, between lines", allowed: "an integer 4096..67108864", schema: integer(4096, 64 << 20), unset: "never rotated" },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;

/** Each option's readSchema, built when it is first read (as onFirstUse does). */
const READ_SCHEMAS: Partial<Record<OptionName, v.GenericSchema<unknown, unknown>>> = {};

/**
 * How `option` reads a value, from a flag, the environment or a config file
 * alike: blanks around text are not part of it ("ogg " from a shell script is
 * ogg, as " 5" is 5), except around a path (OptionSpec.verbatim), since a
 * file's name may begin or end with one.
 */
function readSchema(option: OptionName): v.GenericSchema<unknown, unknown> {
  const spec: OptionSpec = OPTIONS[option];
  if (spec.verbatim) return spec.schema;
  return (READ_SCHEMAS[option] ??= v.pipe(
    v.unknown(),
    v.transform((raw) => (typeof raw === "string" ? raw.trim() : raw)),
    spec.schema,
  ));
}

/** The value `raw` gives `option` as any source's value is read; undefined where it is not allowed. */
export function readValue(option: OptionName, raw: unknown): unknown {
  const result = v.safeParse(readSchema(option), raw);
  return result.success ? result.output : undefined;
}

type ValueOf<N extends OptionName> = v.InferOutput<(typeof OPTIONS)[N]["schema"]>;
export type Settings<N extends OptionName = OptionName> = { [K in N]: ValueOf<K> };

const COMMON = [
  "socket-buffers",
  "metrics",
  "monitor",
  "stats-interval",
  "http-allow-host",
  "log-level",
  "log-format",
  "log-max-bytes",
] as const satisfies readonly OptionName[];

/**
 * The adaptive optimizer's settings: a sending end's only. It acts on the
 * pressure its writes meet (short writes, deadline drops); a receiver meets
 * none, and on a Unix stream socket its receive buffer does not bound what
 * the sender may queue (the sender's send buffer does).
 */
const ADAPTIVE = ["adaptive", "adaptive-threshold", "adaptive-window-ms", "adaptive-calm-ms"] as const satisfies readonly OptionName[];

/** Which settings each role reads. */
export const ROLE_OPTIONS = {
  "output serve": ["socket", "source", "format", "realtime", "loop", "lenient", "socket-mode", "queue-frames", "drop", "write-deadline-ms", "max-latency-ms", "stuck-frames", ...ADAPTIVE, ...COMMON],
  "output recv": ["socket", "sink", "append", "format", "count", "once", "connect-timeout", "pre-skip", "page-ms", "channels", ...COMMON],
  "input serve": ["socket", "sink", "append", "format", "once", "socket-mode", "pre-skip", "page-ms", "sink-pipe-bytes", ...COMMON],
  "input send": ["socket", "source", "format", "realtime", "loop", "lenient", "connect-timeout", "heartbeat-ms", "ack-timeout-ms", "sample-rate", "channels", "frame-size", "queue-frames", "drop", "write-deadline-ms", "max-latency-ms", "stuck-frames", ...ADAPTIVE, ...COMMON],
} as const satisfies Record<Role, readonly OptionName[]>;

export type RoleSettings<R extends Role> = Settings<(typeof ROLE_OPTIONS)[R][number]>;

/**
 * `serve`: `output serve` and `input serve` in one process. Each channel takes
 * its role's options with the channel's prefix (`--output-source`,
 * `--input-sink`, environment AUDIO_AGENT_OUTPUT_SOURCE, ...); the options of
 * the whole process are given once, unprefixed.
 */
export type Command = Role | "serve";
export const SERVE_ROLES = { output: "output serve", input: "input serve" } as const satisfies Record<Channel, Role>;
export const PROCESS_OPTIONS = ["metrics", "monitor", "stats-interval", "http-allow-host", "log-level", "log-format", "log-max-bytes"] as const satisfies readonly OptionName[];
type ProcessOption = (typeof PROCESS_OPTIONS)[number];

export type ServeSettings = Settings<ProcessOption> & {
  /** Each channel's settings as its own role reads them, the process-wide ones included. */
  output: RoleSettings<"output serve">;
  input: RoleSettings<"input serve">;
};

/** One flag of a command: the option it sets, and in serve the channel it belongs to. */
export interface CommandFlag {
  flag: string;
  option: OptionName;
  channel?: Channel;
  /** Its environment variable and default, as this command reads them. */
  env: string;
  default: unknown;
}

const isProcessOption = (option: OptionName): option is ProcessOption => (PROCESS_OPTIONS as readonly string[]).includes(option);

/** The options of one channel of serve: its role's, less the process-wide ones. */
function serveChannelOptions(channel: Channel): OptionName[] {
  return (ROLE_OPTIONS[SERVE_ROLES[channel]] as readonly OptionName[]).filter((option) => !isProcessOption(option));
}

/**
 * The environment variable of a channel's option in serve: the channel's own
 * where the option has one (JETKVM_AUDIO_OUTPUT_SOCKET), else
 * AUDIO_AGENT_<CHANNEL>_<NAME> (AUDIO_AGENT_OUTPUT_SOURCE).
 */
function serveEnvName(option: OptionName, channel: Channel): string {
  const spec: OptionSpec = OPTIONS[option];
  return spec.env?.[channel] ?? agentVariable(`${channel}-${option}`);
}

/** Every flag `command` takes, in help order. */
export function commandFlags(command: Command): CommandFlag[] {
  if (command !== "serve") {
    const channel = command.split(" ")[0] as Channel;
    return (ROLE_OPTIONS[command] as readonly OptionName[]).map((option) => ({
      flag: option,
      option,
      env: envName(option, channel),
      default: defaultOf(option, channel),
    }));
  }
  const channels = (Object.keys(SERVE_ROLES) as Channel[]).flatMap((channel) =>
    serveChannelOptions(channel).map((option) => ({
      flag: `${channel}-${option}`,
      option,
      channel,
      env: serveEnvName(option, channel),
      default: defaultOf(option, channel),
    })),
  );
  const shared = PROCESS_OPTIONS.map((option) => ({ flag: option, option, env: envName(option), default: defaultOf(option) }));
  return [...channels, ...shared];
}

/** A setting has a value that is not allowed, or is missing: exit 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * AUDIO_AGENT_<NAME> of a flag name ("queue-frames" -> AUDIO_AGENT_QUEUE_FRAMES).
 * replaceAll with a string, not a regex: this runs at every start, and the
 * regex engine's code would stay resident (bench/FINDINGS.md).
 */
function agentVariable(flag: string): string {
  return `AUDIO_AGENT_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/** The environment variable of `option` for a role of `channel` (options that differ per channel need one). */
function envName(option: OptionName, channel?: Channel): string {
  const spec: OptionSpec = OPTIONS[option];
  return (channel && spec.env?.[channel]) || agentVariable(option);
}

/** What leaving `option` unset means, where it has no default and that means something (--help shows it as one). */
export function unsetMeaning(option: OptionName): string | undefined {
  const spec: OptionSpec = OPTIONS[option];
  return spec.unset;
}

/** The default of `option` for a role of `channel`, undefined when it has none. */
export function defaultOf(option: OptionName, channel?: Channel): unknown {
  const spec: OptionSpec = OPTIONS[option];
  const value = spec.default;
  return typeof value === "object" && value !== null && channel && channel in value ? (value as Record<Channel, unknown>)[channel] : value;
}

/**
 * packaging/S95audio-agent's own settings (its header lists them): the script
 * reads them, the agent does not. One /etc/default/audio-agent serves both,
 * and the script exports every assignment, so the agent sees them too.
 */
const INIT_SCRIPT_VARIABLES = [
  "AUDIO_AGENT_BIN",
  "AUDIO_AGENT_ROLE",
  "AUDIO_AGENT_ARGS",
  "AUDIO_AGENT_FIFO",
  "AUDIO_AGENT_PIDFILE",
  "AUDIO_AGENT_LOG_FILE",
  "AUDIO_AGENT_LOG_FALLBACK",
  "AUDIO_AGENT_STOP_TIMEOUT",
  "AUDIO_AGENT_START_TIMEOUT",
  "AUDIO_AGENT_DEFAULTS",
] as const;

/**
 * The init script's settings that do nothing under the systemd unit, which
 * reads the same file: it runs /usr/bin/audio-agent $AUDIO_AGENT_ARGS, its
 * own FIFO, the journal, no pid file, its own timeouts. (AUDIO_AGENT_ARGS it
 * reads too; AUDIO_AGENT_DEFAULTS names the file it is in.)
 */
const INIT_SCRIPT_ONLY = INIT_SCRIPT_VARIABLES.filter((name) => name !== "AUDIO_AGENT_ARGS" && name !== "AUDIO_AGENT_DEFAULTS");

/** The build's, the benchmark's and the tests' own variables (build.ts, src/bench, test/support, scripts/). */
const TOOL_VARIABLES = ["AUDIO_AGENT_BIN", "AUDIO_AGENT_COMMIT", "AUDIO_AGENT_BENCH_QUICK", "AUDIO_AGENT_GO_IPC"] as const;

/** Every command's variables, the init script's and the tools': built at the first look, by a process whose environment has such a name. */
let knownVariables: ReadonlySet<string> | undefined;

function allKnownVariables(): ReadonlySet<string> {
  if (knownVariables) return knownVariables;
  // By the names commandFlags gives, without its defaults: plain loops, run once at start.
  const known = new Set<string>(["AUDIO_AGENT_CONFIG", ...INIT_SCRIPT_VARIABLES, ...TOOL_VARIABLES]);
  for (const role of Object.keys(ROLE_OPTIONS) as Role[]) {
    const channel = role.split(" ")[0] as Channel;
    for (const option of ROLE_OPTIONS[role]) known.add(envName(option, channel));
  }
  for (const channel of Object.keys(SERVE_ROLES) as Channel[]) for (const option of serveChannelOptions(channel)) known.add(serveEnvName(option, channel));
  return (knownVariables = known);
}

/**
 * The names an operator may write for an option whose variable is not
 * AUDIO_AGENT_<NAME> (the socket as AUDIO_AGENT_<CHANNEL>_<NAME> or AUDIO_AGENT_<NAME>), with the
 * variable that `command` reads for it (JETKVM_AUDIO_OUTPUT_SOCKET).
 */
function variableStandIns(command: Command | undefined): Map<string, string> {
  const standIns = new Map<string, string>();
  const channels: Channel[] = command === undefined || command === "serve" ? ["output", "input"] : [command.split(" ")[0] as Channel];
  for (const option of Object.keys(OPTIONS) as OptionName[]) {
    const env = (OPTIONS[option] as OptionSpec).env;
    if (!env) continue;
    for (const channel of ["output", "input"] as const) standIns.set(agentVariable(`${channel}-${option}`), env[channel]);
    standIns.set(agentVariable(option), channels.map((channel) => env[channel]).join(" or "));
  }
  return standIns;
}

/**
 * The variables meant by a name with a channel's prefix that is none of the
 * agent's: the ones `command` reads with the other prefix or none (serve's
 * process-wide AUDIO_AGENT_LOG_LEVEL for the log level with INPUT_ before it,
 * its AUDIO_AGENT_INPUT_SINK for the sink with OUTPUT_), else those any
 * command reads (output recv's AUDIO_AGENT_COUNT); as flagMeant tells a flag's.
 */
function channelVariants(name: string, command: Command | undefined): string | undefined {
  const rest = /^AUDIO_AGENT_(?:OUTPUT|INPUT)_(.+)$/.exec(name)?.[1];
  if (rest === undefined) return undefined;
  const variants = ["OUTPUT_", "INPUT_", ""].map((prefix) => `AUDIO_AGENT_${prefix}${rest}`).filter((variant) => variant !== name);
  const read = command === undefined ? [] : commandFlags(command).map((flag) => flag.env);
  const meant = variants.filter((variant) => read.includes(variant));
  return (meant.length > 0 ? meant : variants.filter((variant) => allKnownVariables().has(variant))).join(" or ") || undefined;
}

/** Levenshtein distance of `a` and `b`, given up (Infinity) past `most`. */
function editDistance(a: string, b: string, most: number): number {
  if (Math.abs(a.length - b.length) > most) return Infinity;
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    let least = i;
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      least = Math.min(least, next[j]!);
    }
    if (least > most) return Infinity;
    row = next;
  }
  return row[b.length]! <= most ? row[b.length]! : Infinity;
}

/** The edits (a letter more, less or changed) a name may be away from a known one to be taken for its misspelling. */
const MISSPELT_EDITS = 2;

/** The known name nearest `name`, within MISSPELT_EDITS; undefined when none is that near. */
export function nearestName(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = MISSPELT_EDITS + 1;
  for (const candidate of known) {
    const distance = editDistance(name, candidate, MISSPELT_EDITS);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

/**
 * Warnings of the environment's AUDIO_AGENT_* and JETKVM_AUDIO_* names that
 * do nothing, one line each kind, for `command` (undefined: any, as `config
 * check` looks): a name that is no setting of any command, nor the init
 * script's or the tools' (with the known name it is likely a misspelling of);
 * and under systemd (INVOCATION_ID, which it sets for every service process,
 * systemd.exec(5)) the init script's own settings, which the unit never
 * reads. Another role's setting is quiet: one file serves several roles.
 */
export function environmentWarnings(env: Record<string, string | undefined>, command?: Command): string[] {
  const warnings: string[] = [];
  let suggestions: Map<string, string> | undefined;
  for (const name of Object.keys(env)) {
    // An empty variable is unset, as for every option's.
    if ((!name.startsWith("AUDIO_AGENT_") && !name.startsWith("JETKVM_AUDIO_")) || !env[name]) continue;
    const known = allKnownVariables();
    if (known.has(name)) continue;
    // A known name suggests itself; a stand-in, the variable that is read instead.
    suggestions ??= new Map([...[...known].map((name) => [name, name] as const), ...variableStandIns(command)]);
    const near = suggestions.get(nearestName(name, suggestions.keys()) ?? "") ?? channelVariants(name, command);
    warnings.push(`environment ${name} is no setting of the agent's, ignored${near ? `: did you mean ${near}?` : " (--help names each option's variable)"}`);
  }
  const initScripts = env.INVOCATION_ID ? INIT_SCRIPT_ONLY.filter((name) => env[name]) : [];
  if (initScripts.length > 0) {
    const [names, are] = initScripts.length === 1 ? [initScripts[0], "is"] : [initScripts.join(", "), "are"];
    warnings.push(
      `environment ${names} ${are} the init script's (S95audio-agent), ignored under systemd: the unit runs /usr/bin/audio-agent $AUDIO_AGENT_ARGS (packaging/README.md, "systemd hosts")`,
    );
  }
  return warnings;
}

/** A validated value as a flag or a config file writes it: what the option's schema reads back. */
export function writtenValue(option: OptionName, value: unknown): unknown {
  const spec: OptionSpec = OPTIONS[option];
  return spec.written ? spec.written(value) : value;
}

/** A config file's settings, validated: top level for every role, sections per channel. */
export interface ConfigFile {
  path: string;
  top: Partial<Record<OptionName, unknown>>;
  sections: Partial<Record<Channel, Partial<Record<OptionName, unknown>>>>;
}

export interface ConfigSources {
  /** Values from the command line (readFlags output). */
  flags: Record<string, unknown>;
  env: Record<string, string | undefined>;
  file?: ConfigFile;
}

/** Read when it exists and no --config (or AUDIO_AGENT_CONFIG) names another file. */
export const DEFAULT_CONFIG_FILE = "/etc/audio-agent.json";
/** A config file's largest size: every setting with its longest value fits in a few KiB. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/** The roles that read `option`. */
function rolesReading(option: OptionName): Role[] {
  return (Object.keys(ROLE_OPTIONS) as Role[]).filter((role) => (ROLE_OPTIONS[role] as readonly OptionName[]).includes(option));
}

/** The options some role of `channel` reads: what its section of a config file takes (a key no role of it reads would never apply). */
function sectionOptions(channel: Channel): OptionName[] {
  return (Object.keys(OPTIONS) as OptionName[]).filter((option) => rolesReading(option).some((role) => role.startsWith(`${channel} `)));
}

/** A config file's shape: every option at the top level, and in the "output"/"input" sections the options of their channel. */
const configFileSchema = onFirstUse(() => {
  const schemas = (options: OptionName[]) => Object.fromEntries(options.map((name) => [name, v.optional(readSchema(name))]));
  const section = (channel: Channel) => v.optional(v.strictObject(schemas(sectionOptions(channel))));
  return v.strictObject({ ...schemas(Object.keys(OPTIONS) as OptionName[]), output: section("output"), input: section("input") });
});

/** The most of a value a message shows, in characters: a socket path or a host list whole, not a megabyte. */
const SHOWN_LENGTH = 200;

/**
 * `value` as JSON for a message, cut short ("...") past SHOWN_LENGTH
 * characters. Written here, not by JSON.stringify: a config file may hold a
 * string of a megabyte, or arrays nested 500,000 deep, which JSON.stringify
 * writes whole or overflows the stack on; this stops at the length, so never
 * goes deeper than it. A number JSON cannot write (1e400 is Infinity to
 * JSON.parse) is shown as itself, not as null.
 */
export function shownValue(value: unknown): string {
  let out = "";
  const show = (item: unknown): void => {
    if (out.length > SHOWN_LENGTH) return;
    if (typeof item === "string") out += JSON.stringify(item.slice(0, SHOWN_LENGTH + 1));
    else if (Array.isArray(item)) {
      out += "[";
      for (let i = 0; i < item.length && out.length <= SHOWN_LENGTH; i++) {
        if (i > 0) out += ",";
        show(item[i]);
      }
      out += "]";
    } else if (typeof item === "object" && item !== null) {
      out += "{";
      const keys = Object.keys(item);
      for (let i = 0; i < keys.length && out.length <= SHOWN_LENGTH; i++) {
        if (i > 0) out += ",";
        show(keys[i]);
        out += ":";
        show((item as Record<string, unknown>)[keys[i]!]);
      }
      out += "}";
    } else out += String(item);
  };
  show(value);
  if (out.length <= SHOWN_LENGTH) return out;
  // Not between the halves of a surrogate pair.
  const end = SHOWN_LENGTH - (out.charCodeAt(SHOWN_LENGTH - 1) >= 0xd800 && out.charCodeAt(SHOWN_LENGTH - 1) <= 0xdbff ? 1 : 0);
  return `${out.slice(0, end)}...`;
}

/** What the JSON.parse of a reviver is told of a value: its text in the source, for a number. */
type ParseContext = { source?: string };

/**
 * The text `text` gives the number at the key path `keys`, as written; undefined
 * where it cannot be had (a file nested too deep for a reviver's walk).
 */
function numberAsWritten(text: string, keys: string[]): string | undefined {
  const written = new Map<object, Map<string, string>>();
  let tree: unknown;
  try {
    tree = JSON.parse(text, function (this: object, key: string, value: unknown, context?: ParseContext) {
      if (typeof value === "number" && context?.source !== undefined) {
        if (!written.has(this)) written.set(this, new Map());
        written.get(this)!.set(key, context.source);
      }
      return value;
    } as (key: string, value: unknown) => unknown);
  } catch {
    return undefined;
  }
  let holder = tree;
  for (const key of keys.slice(0, -1)) holder = (holder as Record<string, unknown> | undefined)?.[key];
  return typeof holder === "object" && holder !== null ? written.get(holder)?.get(keys.at(-1) ?? "") : undefined;
}

/**
 * Validates a config file's text. Any problem is a ConfigError naming the
 * file, the key path, the value and what is allowed.
 */
export function parseConfigFile(text: string, path: string): ConfigFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const at = walkJson(text).fault;
    throw new ConfigError(`config ${path}: not valid JSON (${(e as Error).message})${at ? ` at line ${at.line}, column ${at.column}` : ""}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ConfigError(`config ${path}: expected a JSON object of settings, found ${Array.isArray(json) ? "an array" : shownValue(json)}`);
  }
  const { twice } = walkJson(text);
  if (twice) {
    throw new ConfigError(
      `config ${path}: key ${shownValue(twice.keyPath)} is given twice (${twice.firstLine === twice.line ? `both on line ${twice.line}` : `lines ${twice.firstLine} and ${twice.line}`}); JSON keeps only the last, so the other would do nothing: give it once`,
    );
  }
  for (const section of ["output", "input"] as const) {
    const value = (json as Record<string, unknown>)[section];
    if (value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))) {
      throw new ConfigError(`config ${path}: "${section}" must be an object of settings, found ${shownValue(value)}`);
    }
  }
  const result = v.safeParse(configFileSchema, json);
  if (!result.success) {
    const issue = result.issues[0];
    const keys = (issue.path ?? []).map((item) => String(item.key));
    const key = keys[keys.length - 1] ?? "";
    const keyPath = keys.join(".");
    const raw = issue.path?.[issue.path.length - 1]?.value ?? issue.input;
    // A number as the file spells it: JSON.parse reads 9007199254740993 as ...992, and 1e400 as Infinity.
    const value = (typeof raw === "number" && numberAsWritten(text, keys)) || shownValue(raw);
    const isSection = keys.length === 1 && (key === "output" || key === "input");
    const channel = keys.length > 1 ? (keys[0] as Channel) : undefined;
    // Own keys only: "toString" or "constructor" is in every object, not an option.
    if (!Object.hasOwn(OPTIONS, key) && !isSection) {
      const where = channel ? `the "${channel}" section` : "the top level or an output/input section";
      const allowed = channel ? sectionOptions(channel) : Object.keys(OPTIONS);
      const near = nearestName(key, allowed);
      throw new ConfigError(`config ${path}: unknown key ${shownValue(keyPath)}; ${near ? `did you mean "${near}"? ` : ""}allowed in ${where}: ${allowed.join(", ")}`);
    }
    if (channel && !sectionOptions(channel).includes(key as OptionName)) {
      const other = channel === "output" ? "input" : "output";
      throw new ConfigError(
        `config ${path}: "${keyPath}" is read by no ${channel} role (${rolesReading(key as OptionName).join(", ")} reads it): give it in the "${other}" section or at the top level`,
      );
    }
    if (isSection) {
      throw new ConfigError(`config ${path}: "${keyPath}" must be an object of settings, found ${value}`);
    }
    throw new ConfigError(`config ${path}: "${keyPath}": ${value} is not allowed: ${OPTIONS[key as OptionName].allowed}`);
  }
  const { output, input, ...top } = result.output as Record<string, unknown>;
  return {
    path,
    top: top as ConfigFile["top"],
    sections: { output: output as ConfigFile["top"], input: input as ConfigFile["top"] },
  };
}

/**
 * The config file a command line names: --config, else AUDIO_AGENT_CONFIG; an
 * empty variable is unset, as for every other option's variable, and an empty
 * --config is refused, as every other option's empty flag is.
 */
export function namedConfigFile(flag: unknown, env: Record<string, string | undefined>): string | undefined {
  if (flag === "") throw new ConfigError(`--config "" is not allowed: a JSON file`);
  return (flag as string | undefined) ?? (env.AUDIO_AGENT_CONFIG || undefined);
}

/**
 * Loads the config file: `explicit` (from --config or AUDIO_AGENT_CONFIG) must
 * exist, and is read whatever it is (`--config <(...)` is a pipe); the default
 * (/etc/audio-agent.json) is read only when it is a regular file.
 * node:fs, which every role loads anyway, synchronously, and asked first
 * rather than caught: Bun.file and a thrown error each cost a process
 * resident code it would not need otherwise (bench/FINDINGS.md).
 */
export async function loadConfigFile(explicit: string | undefined, defaultPath = DEFAULT_CONFIG_FILE): Promise<ConfigFile | undefined> {
  const path = explicit ?? defaultPath;
  const missing = () => {
    if (explicit === undefined) return undefined;
    throw new ConfigError(`config ${path}: no such file`);
  };
  const unreadable = (e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code;
    // Removed since it was found: as if it had not been there.
    if (code === "ENOENT") return missing();
    // The default path too: a file the operator put there is not passed over silently.
    throw new ConfigError(`config ${path}: cannot be read (${code ?? e})`);
  };
  let kind;
  try {
    kind = statSync(path, { throwIfNoEntry: false });
  } catch (e) {
    return unreadable(e);
  }
  if (!kind || (explicit === undefined && !kind.isFile())) return missing();
  // Read whole, so bounded: a file of gigabytes would end in ENOMEM, or hold start-up reading it.
  const tooLarge = (size?: number) => new ConfigError(`config ${path}: ${size === undefined ? "" : `${size} bytes is `}more than a config file may hold (at most ${MAX_CONFIG_BYTES}, 1 MiB)`);
  if (kind.isFile() && kind.size > MAX_CONFIG_BYTES) throw tooLarge(kind.size);
  let bytes: Uint8Array;
  try {
    bytes = kind.isFile() ? readFileSync(path) : readAtMost(path, MAX_CONFIG_BYTES + 1);
  } catch (e) {
    return unreadable(e);
  }
  // A pipe or a device (--config <(...), /dev/zero) has no size to look at first.
  if (!kind.isFile() && bytes.length > MAX_CONFIG_BYTES) throw tooLarge();
  return parseConfigFile(configText(bytes, path), path);
}

/**
 * A config file's bytes as text. A byte order mark first, which some editors
 * write, is not part of it (RFC 8259 lets a parser ignore one; JSON.parse
 * would refuse it as a character no terminal shows). A byte that is not UTF-8
 * is refused where it is: read as U+FFFD, a Latin-1 "é" in a path would name
 * another file.
 */
export function configText(bytes: Uint8Array, path: string): string {
  // Decoded by the global Buffer, which every role has loaded (TextDecoder, or node:buffer's isUtf8,
  // would add their code to each process's memory: bench/FINDINGS.md).
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8");
  if (!isUtf8(bytes)) {
    const at = firstNonUtf8(bytes);
    const line = bytes.subarray(0, at).filter((byte) => byte === 0x0a).length + 1;
    throw new ConfigError(`config ${path}: byte 0x${bytes[at]!.toString(16).padStart(2, "0")} at offset ${at} (line ${line}) is not UTF-8, which a JSON file is`);
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Whether `bytes` are UTF-8: they encode back to themselves, where a byte that is not comes back as U+FFFD's three. */
export function isUtf8(bytes: Uint8Array): boolean {
  const whole = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return Buffer.from(whole.toString("utf8"), "utf8").equals(whole);
}

/** The offset of the first byte of `bytes` that begins no UTF-8 character: where a lenient decoder's first U+FFFD stands for no EF BF BD. */
export function firstNonUtf8(bytes: Uint8Array): number {
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  let at = 0;
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code === 0xfffd && !(bytes[at] === 0xef && bytes[at + 1] === 0xbf && bytes[at + 2] === 0xbd)) return at;
    at += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  }
  return at;
}


/** Up to `limit` bytes of `path`, read in turn: for what has no size (a pipe, a device). */
function readAtMost(path: string, limit: number): Uint8Array {
  const bytes = new Uint8Array(limit);
  const fd = openSync(path, "r");
  let at = 0;
  try {
    for (let n; at < limit && (n = readSync(fd, bytes, at, limit - at, null)) > 0; ) at += n;
  } finally {
    closeSync(fd);
  }
  return bytes.subarray(0, at);
}

function parseValue(option: OptionName, raw: unknown, where: string): unknown {
  const spec: OptionSpec = OPTIONS[option];
  const result = v.safeParse(readSchema(option), raw);
  if (!result.success) {
    // `where` names the flag, the file's key, or the variable with its "=" (NAME="value", as set).
    throw new ConfigError(`${where}${where.endsWith("=") ? "" : " "}${shownValue(raw)} is not allowed: ${spec.allowed}`);
  }
  return result.output;
}

/** How a command names an option: its flag (without dashes) and its environment variable. */
interface Naming {
  command: string;
  flag: (option: OptionName) => string;
  env: (option: OptionName) => string;
}

/**
 * The value `option` is given, by precedence: its flag > its environment
 * variable > the file's `section` > the file's top level; and where it came
 * from when not from the flag ("environment X", `config "key"`). Undefined
 * where none gives it (its default applies).
 */
function pick(
  option: OptionName,
  channel: Channel | undefined,
  section: ConfigFile["top"] | undefined,
  sources: ConfigSources,
  naming: Naming,
): { value: unknown; from?: string } | undefined {
  const flagName = naming.flag(option);
  const flag = sources.flags[flagName];
  if (flag !== undefined) return { value: parseValue(option, flag, `--${flagName}`) };
  const envKey = naming.env(option);
  const env = sources.env[envKey];
  if (env !== undefined && env !== "") return { value: parseValue(option, env, `environment ${envKey}=`), from: `environment ${envKey}` };
  if (section?.[option] !== undefined) return { value: section[option], from: `config "${channel ?? ""}${channel ? "." : ""}${option}"` };
  const top = sources.file?.top;
  if (top?.[option] !== undefined) return { value: top[option], from: `config "${option}"` };
  return undefined;
}

/** Where each resolved setting came from when not from its flag or default ("environment X", `config "key"`), by option. */
const ORIGINS = new WeakMap<object, Readonly<Record<string, string>>>();

/** Where `option` of resolved `settings` came from when not from its flag or its default: "environment X", `config "key"`. */
export function settingOrigin(settings: object, option: string): string | undefined {
  return ORIGINS.get(settings)?.[option];
}

/** `settings`, whose options came from `origins` (as settingOrigin tells them), for a view of resolved settings made anew. */
export function withOrigins<T extends object>(settings: T, origins: Record<string, string | undefined>): T {
  ORIGINS.set(settings, Object.fromEntries(Object.entries(origins).filter((entry): entry is [string, string] => entry[1] !== undefined)));
  return settings;
}

/**
 * Resolves `options`: flags > environment > the file's `section` > the file's
 * top level > defaults (of `channel`). With `requireAll` false, missing
 * required settings are left out (config print).
 */
function resolveOptions(
  options: readonly OptionName[],
  channel: Channel | undefined,
  section: ConfigFile["top"] | undefined,
  sources: ConfigSources,
  requireAll: boolean,
  naming: Naming,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  /** Where a setting other than a flag came from, for the checks below to name: "environment X", `config "key"`. */
  const from: Record<string, string> = {};
  for (const option of options) {
    const picked = pick(option, channel, section, sources, naming);
    if (picked) {
      out[option] = picked.value;
      if (picked.from) from[option] = picked.from;
    } else if (defaultOf(option, channel) !== undefined) out[option] = defaultOf(option, channel);
    else if (requireAll && (OPTIONS[option] as OptionSpec).required) {
      throw new ConfigError(`${naming.command}: --${naming.flag(option)} is required (${OPTIONS[option].allowed})`);
    }
  }
  /** The flag, and where the value came from when not from it. */
  const named = (option: OptionName) => `--${naming.flag(option)}${from[option] ? ` (from ${from[option]})` : ""}`;
  // A server's socket is bound under a hidden name beside it first (transport/socket-file.ts); a client connects to the path itself.
  if (typeof out.socket === "string" && LISTENING.has(naming.command) && Buffer.byteLength(dirname(out.socket)) > MAX_SOCKET_DIRECTORY) {
    throw new ConfigError(
      `${named("socket")} "${out.socket}" is not allowed: a server's socket directory is at most ${MAX_SOCKET_DIRECTORY} bytes (room in sun_path for the hidden name it is bound by first)`,
    );
  }
  // Asked to replay what can be read only once: played once and ended, without this.
  if (out.loop === true && out.source === "-") {
    throw new ConfigError(`${naming.command}: ${named("loop")} replays a file; ${named("source")} - (stdin) can be read only once`);
  }
  for (const end of ["source", "sink"] as const) refuseSocketAsFile(out[end], named(end), out.socket, named("socket"));
  ORIGINS.set(out, from);
  return out;
}

/**
 * A source or sink at a socket's path (the role's own, or in serve the other
 * channel's) would open the socket file as a file: ENXIO at best, once the
 * socket is bound. Refused before anything starts.
 */
function refuseSocketAsFile(path: unknown, pathFlag: string, socket: unknown, socketFlag: string): void {
  if (typeof path !== "string" || typeof socket !== "string" || path === "-" || basename(path) !== basename(socket)) return;
  if (socketFile(path) !== socketFile(socket)) return;
  throw new ConfigError(`${pathFlag} ${path} is the socket's path (${socketFlag} ${socket}): a source or sink is a file, a FIFO or "-", never a socket`);
}

/**
 * Resolves the effective settings of `role`: flags > environment > the file's
 * section for the channel > the file's top level > defaults. With
 * `requireAll` false, missing required settings are left out (config print).
 */
export function resolveSettings<R extends Role>(role: R, sources: ConfigSources, requireAll = true): RoleSettings<R> {
  const channel = role.split(" ")[0] as Channel;
  const naming = { command: role, flag: (option: OptionName) => option, env: (option: OptionName) => envName(option, channel) };
  return resolveOptions(ROLE_OPTIONS[role], channel, sources.file?.sections[channel], sources, requireAll, naming) as RoleSettings<R>;
}

/**
 * Resolves the settings of `serve`. Each channel's options resolve as its
 * role's do (the file's section for the channel, then the top level), read
 * from the prefixed flags and variables. A process-wide option comes from a
 * flag, the environment, a section (both sections, where both give it, must
 * agree: there is one process), the top level, or its default.
 */
export function resolveServeSettings(sources: ConfigSources, requireAll = true): ServeSettings {
  const file = sources.file;
  const fromSections: ConfigFile["top"] = {};
  for (const option of PROCESS_OPTIONS) {
    const [output, input] = [file?.sections.output?.[option], file?.sections.input?.[option]];
    if (output !== undefined && input !== undefined && JSON.stringify(output) !== JSON.stringify(input)) {
      throw new ConfigError(
        `config ${file!.path}: "output.${option}" and "input.${option}" differ, and serve runs both channels in one process: ` +
          `give "${option}" once, at the top level`,
      );
    }
    fromSections[option] = output ?? input;
  }
  const shared = resolveOptions(PROCESS_OPTIONS, undefined, fromSections, sources, requireAll, {
    command: "serve",
    flag: (option) => option,
    env: (option) => envName(option),
  }) as Settings<ProcessOption>;
  // Taken from a section (pick takes it before the top level): told by the section's key.
  const sharedFrom: Record<string, string> = { ...ORIGINS.get(shared) };
  for (const option of PROCESS_OPTIONS) {
    if (fromSections[option] === undefined || sharedFrom[option] !== `config "${option}"`) continue;
    sharedFrom[option] = `config "${file?.sections.output?.[option] !== undefined ? "output" : "input"}.${option}"`;
  }
  ORIGINS.set(shared, sharedFrom);
  const channel = <C extends Channel>(c: C) => {
    const own = resolveOptions(serveChannelOptions(c), c, file?.sections[c], sources, requireAll, serveNaming(c));
    const settings = { ...own, ...shared };
    ORIGINS.set(settings, { ...ORIGINS.get(own), ...ORIGINS.get(shared) });
    return settings as RoleSettings<(typeof SERVE_ROLES)[C]>;
  };
  const settings = { ...shared, output: channel("output"), input: channel("input") };
  ORIGINS.set(settings, ORIGINS.get(shared) ?? {});
  return settings;
}

/** How serve names a channel's option: its prefixed flag and variable. */
function serveNaming(c: Channel): Naming {
  return { command: "serve", flag: (option) => `${c}-${option}`, env: (option) => serveEnvName(option, c) };
}

/**
 * Refuses a serve run whose two channels name one socket file, before
 * anything listens: the second would find the first one's live socket there.
 * (Not part of resolving: `config print` of every role shows such settings,
 * as it shows a config file's top-level "socket", which the single roles take;
 * `config print serve` refuses them.)
 */
export function checkServeSockets(settings: ServeSettings, sources: ConfigSources): void {
  const file = sources.file;
  const [output, input] = [settings.output.socket, settings.input.socket];
  // Each flag named with where its value came from when that was not the flag (a default: from nowhere).
  const flagOf = (c: Channel, option: "socket" | "source" | "sink") => {
    const from = pick(option, c, file?.sections[c], sources, serveNaming(c))?.from;
    return `--${c}-${option}${from ? ` (from ${from})` : ""}`;
  };
  const named = (c: Channel) => flagOf(c, "socket");
  // Each channel's own socket is refused as its file by resolveOptions; here the other channel's.
  refuseSocketAsFile(settings.output.source, flagOf("output", "source"), input, named("input"));
  refuseSocketAsFile(settings.input.sink, flagOf("input", "sink"), output, named("output"));
  if (socketFile(output) !== socketFile(input)) return;
  // Blamed only where it can be the cause: it is the path, and a channel's section leaves it in force.
  const top = file?.top.socket;
  const inForce = file?.sections.output?.socket === undefined || file?.sections.input?.socket === undefined;
  const fromTop = typeof top === "string" && inForce && socketFile(top) === socketFile(output) ? ` (the config file's top-level "socket" applies to both channels: give it in "output" and "input")` : "";
  throw new ConfigError(`${named("output")} and ${named("input")} are both ${output}: each channel needs a socket of its own${fromTop}`);
}

/**
 * The file a socket path names: its directory's real path and its name. The
 * directory is resolved by libc's realpath, by the kernel's rules (a ".."
 * after a symbolic link leaves the link's target; Bun's own realpathSync
 * takes ".." away as text first); one that does not exist, as text.
 */
function socketFile(path: string): string {
  try {
    return join(realpathSync.native(dirname(path)), basename(path));
  } catch {
    return resolve(path);
  }
}

/** The switch "no-NAME" turns off (NAME, a boolean flag that is not itself named "no-..."); undefined for anything else. */
function switchNegated(name: string, flags: FlagSpecs): string | undefined {
  if (!name.startsWith("no-") || Object.hasOwn(flags, name)) return undefined;
  const base = name.slice(3);
  return Object.hasOwn(flags, base) && flags[base]!.type === "boolean" ? base : undefined;
}

/**
 * The flag an unknown `--name` likely meant: one a letter or two away
 * (--queue-frame), or in serve the channel's own (--source: --output-source;
 * --output-sink: --input-sink; --output-metrics: --metrics).
 */
function flagMeant(name: string, flags: FlagSpecs): string | undefined {
  const known = Object.keys(flags);
  const unprefixed = name.replace(/^(output|input)-/, "");
  // A process-wide option given a channel's prefix (--output-metrics: --metrics) is the option itself.
  const channels = [...(["output", "input"] as const).map((channel) => `${channel}-${unprefixed}`), unprefixed].filter((flag) => flag !== name && Object.hasOwn(flags, flag));
  const near = nearestName(name, known);
  const meant = near !== undefined ? [near] : channels;
  return meant.length > 0 ? meant.map((flag) => `--${flag}`).join(" or ") : undefined;
}

/** The flags a command takes: how each is read, and for a value what is allowed. */
export type FlagSpecs = Record<string, { type: "string" | "boolean"; short?: string; allowed?: string }>;

/**
 * Reads a command line's flags and positional arguments: `--name value`,
 * `--name=value`, a switch `--name` (off: `--no-name`, `--name=false`), a
 * short `-h`, `--` ending the flags.
 * Each mistake (an unknown flag, a flag missing its value, a value given to a
 * switch) is a ConfigError of one line naming the flag. (Written here rather
 * than with node:util's parseArgs: loading node:util costs every process
 * megabytes of memory.)
 */
export function readFlags(args: string[], flags: FlagSpecs, command: string): { values: Record<string, string | boolean>; positionals: string[] } {
  const see = `see audio-agent ${command} --help`;
  const shorts = new Map(Object.entries(flags).flatMap(([name, spec]) => (spec.short ? [[spec.short, name] as const] : [])));
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const long = arg.startsWith("--");
    // "--=x" has no name before its "=": unknown as a whole, not as "--".
    const at = long ? arg.indexOf("=") : -1;
    const rawName = at > 2 ? arg.slice(0, at) : arg;
    const inline = at > 2 ? arg.slice(at + 1) : undefined;
    // --no-NAME turns a switch off (as GNU tools and parseArgs' allowNegative read it), against a file or the environment.
    const negated = long ? switchNegated(rawName.slice(2), flags) : undefined;
    if (negated !== undefined) {
      if (inline !== undefined) throw new ConfigError(`${command}: ${rawName} takes no value, found ${shownValue(inline)} (${see})`);
      values[negated] = false;
      continue;
    }
    const name = long ? rawName.slice(2) : shorts.get(rawName.slice(1));
    // Own keys only: --constructor or --toString is in every object, not a flag.
    const spec = name === undefined || !Object.hasOwn(flags, name) ? undefined : flags[name];
    if (name === undefined || !spec) {
      const near = long ? flagMeant(rawName.slice(2), flags) : undefined;
      // Cut short as a value is: a word of a megabyte is named, not echoed.
      const shown = rawName.length > SHOWN_LENGTH ? `${rawName.slice(0, SHOWN_LENGTH)}...` : rawName;
      throw new ConfigError(`${command}: unknown option ${shown} (${near ? `did you mean ${near}? ` : ""}${see})`);
    }
    if (spec.type === "boolean") {
      // Blanks around it are not part of it, as around any value but a path.
      const word = inline?.trim();
      if (word !== undefined && word !== "true" && word !== "false") {
        throw new ConfigError(`${command}: ${rawName} is a switch: takes true or false, found ${shownValue(inline)} (${see})`);
      }
      values[name] = word !== "false";
      continue;
    }
    // "--count --once": the next flag is not a value, the value is missing.
    const value = inline ?? args[i + 1];
    if (value === undefined || (inline === undefined && value.startsWith("--"))) {
      throw new ConfigError(`${command}: ${rawName} needs a value${spec.allowed ? ` (${spec.allowed})` : ""}`);
    }
    if (inline === undefined) i++;
    values[name] = value;
  }
  return { values, positionals };
}

/** A place in a text, both 1-based. */
export interface TextPlace {
  line: number;
  column: number;
}

/** What walkJson finds in a config file's text. */
export interface JsonWalk {
  /** Where it stops being JSON: the first character that cannot be there, or its end where it ends too soon. */
  fault?: TextPlace;
  /** The first key given twice in one object (its path from the top, dotted), and the lines of both. */
  twice?: { keyPath: string; firstLine: number; line: number };
}

/**
 * One walk of `text` as JSON (RFC 8259), for what JSON.parse does not say:
 * where a text it refuses goes wrong (its message says what, never where),
 * and which key a text it takes gives twice in one object (it keeps the last
 * without a word). A loop with a stack of the open objects and arrays, not
 * recursion: a file may nest 500,000 deep.
 */
export function walkJson(text: string): JsonWalk {
  /** Each object or array open: an object's keys so far (the offset of each), its key in its parent, the key read last. */
  const open: { keys?: Map<string, number>; name?: string; last?: string }[] = [];
  /** What may come next: a value (or, first in an array, its end), a key (or, first in an object, its end), the colon, a comma or the end, nothing more. */
  let next: "value" | "value or ]" | "key" | "key or }" | ":" | "," | "end" = "value";
  const afterValue = (): typeof next => (open.length > 0 ? "," : "end");
  const number = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  let twice: JsonWalk["twice"];
  let i = 0;
  const place = (at: number): TextPlace => {
    const before = text.slice(0, at);
    // Columns in characters, as an editor shows them: one beyond U+FFFF is two UTF-16 units.
    return { line: before.split("\n").length, column: [...before.slice(before.lastIndexOf("\n") + 1)].length + 1 };
  };
  const fail = (at: number): JsonWalk => ({ fault: place(at), twice });
  /** The offset after the string opening at `i`, or the failure where it breaks (a raw control character, a bad escape, the end). */
  const stringEnd = (): number | JsonWalk => {
    for (let j = i + 1; j < text.length; j++) {
      const c = text.charCodeAt(j);
      if (c === 0x22) return j + 1;
      if (c < 0x20) return fail(j);
      if (c !== 0x5c) continue;
      j++;
      if (text[j] === "u") {
        if (!/^[0-9a-fA-F]{4}$/.test(text.slice(j + 1, j + 5))) return fail(j);
        j += 4;
      } else if (j >= text.length || !'"\\/bfnrt'.includes(text[j]!)) return fail(j);
    }
    return fail(text.length);
  };
  /** Notes the key just read (at `at`, to `end`) in its object, and the first one given twice. */
  const key = (at: number, end: number) => {
    const top = open.at(-1)!;
    const name = JSON.parse(text.slice(at, end)) as string;
    const first = top.keys!.get(name);
    if (first !== undefined && twice === undefined) {
      const keyPath = [...open.map((o) => o.name), name].filter((n) => n !== undefined).join(".");
      twice = { keyPath, firstLine: place(first).line, line: place(at).line };
    }
    top.keys!.set(name, at);
    top.last = name;
  };
  for (;;) {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
    if (i >= text.length) return next === "end" ? { twice } : fail(i);
    const c = text[i]!;
    if (next === "end") return fail(i);
    if (next === ":" || next === ",") {
      const close = open.at(-1)!.keys ? "}" : "]";
      if (next === ":" && c === ":") next = "value";
      else if (next === "," && c === ",") next = close === "}" ? "key" : "value";
      else if (next === "," && c === close) {
        open.pop();
        next = afterValue();
      } else return fail(i);
      i++;
      continue;
    }
    if ((next === "value or ]" && c === "]") || (next === "key or }" && c === "}")) {
      open.pop();
      next = afterValue();
      i++;
      continue;
    }
    if (c === '"') {
      const end = stringEnd();
      if (typeof end !== "number") return end;
      if (next === "key" || next === "key or }") {
        key(i, end);
        next = ":";
      } else next = afterValue();
      i = end;
      continue;
    }
    if (next === "key" || next === "key or }") return fail(i);
    if (c === "{" || c === "[") {
      const parent = open.at(-1);
      open.push({ keys: c === "{" ? new Map() : undefined, name: parent?.keys ? parent.last : undefined });
      next = c === "{" ? "key or }" : "value or ]";
      i++;
      continue;
    }
    const word = ["true", "false", "null"].find((w) => text.startsWith(w, i));
    number.lastIndex = i;
    if (word) i += word.length;
    else if (number.test(text)) i = number.lastIndex;
    else return fail(i);
    next = afterValue();
  }
}
