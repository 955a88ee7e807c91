import {
  ConfigError,
  loadConfigFile,
  OPTIONS,
  readFlags,
  resolveSettings,
  ROLE_OPTIONS,
  type FlagSpecs,
  type OptionName,
  type Role,
} from "../config.ts";
import { SourceFormatError } from "../media/file-format.ts";
import { Logger } from "../observe/logger.ts";
import { ProtocolError } from "../protocol/index.ts";
import { SocketPathError } from "../transport/socket-file.ts";
import { ConnectTimeoutError } from "../transport/unix-client.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from "./errors.ts";
import { CHANNEL_HELP, roleHelp, TOP_HELP } from "./help.ts";
import { Shutdown } from "../roles/shutdown.ts";
import { versionLine } from "./version.ts";

type RoleMain = (settings: never, logger: Logger, shutdown: Shutdown) => Promise<void>;

/**
 * Each role's module is loaded only when that role runs: a process plays one
 * role, and loading them all (and the benchmark) cost start-up time.
 */
const ROLES: Record<Role, () => Promise<RoleMain>> = {
  "output serve": async () => (await import("../roles/output-serve.ts")).outputServe,
  "output recv": async () => (await import("../roles/output-recv.ts")).outputRecv,
  "input serve": async () => (await import("../roles/input-serve.ts")).inputServe,
  "input send": async () => (await import("../roles/input-send.ts")).inputSend,
};

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

const defaultIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
};

/** Runs one command line (without the program name); resolves with the exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (e) {
    const { code, message } = describeFailure(e);
    io.err(`audio-agent: ${message}\n`);
    return code;
  }
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [first, second] = argv;
  if (first === "--version" || first === "-V" || first === "version") {
    io.out(versionLine() + "\n");
    return EXIT_OK;
  }
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    io.out(TOP_HELP);
    return first === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (first === "config") return (await import("./config-command.ts")).configCommand(argv.slice(1), io);
  if (first === "bench") return (await import("../bench/bench.ts")).bench(argv.slice(1));
  if (first !== "output" && first !== "input") {
    throw new UsageError(`unknown command "${first}"; allowed: output, input, config, bench (see --help)`);
  }
  if (second === undefined || second === "--help" || second === "-h") {
    io.out(CHANNEL_HELP[first]);
    return second === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const role = `${first} ${second}` as Role;
  const load = ROLES[role];
  if (!(role in ROLE_OPTIONS) || !load) {
    const allowed = first === "output" ? "serve, recv" : "serve, send";
    throw new UsageError(`unknown ${first} command "${second}"; allowed: ${allowed}`);
  }
  const flags = parseFlags(role, argv.slice(2));
  if (flags.help) {
    io.out(roleHelp(role));
    return EXIT_OK;
  }
  const file = await loadConfigFile((flags.config as string | undefined) ?? io.env.AUDIO_AGENT_CONFIG);
  const settings = resolveSettings(role, { flags, env: io.env, file });
  const logger = new Logger({ level: settings["log-level"], format: settings["log-format"] });
  const shutdown = new Shutdown(logger.for("agent"));
  try {
    const main = await load();
    await main(settings as never, logger, shutdown);
    return EXIT_OK;
  } finally {
    shutdown.dispose();
  }
}

function parseFlags(role: Role, args: string[]): Record<string, unknown> {
  const flags: FlagSpecs = { help: { type: "boolean", short: "h" }, config: { type: "string", allowed: "a JSON file" } };
  for (const name of ROLE_OPTIONS[role] as readonly OptionName[]) flags[name] = { type: OPTIONS[name].flag, allowed: OPTIONS[name].allowed };
  const { values, positionals } = readFlags(args, flags, role);
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" (see audio-agent ${role} --help)`);
  return values;
}

function describeFailure(e: unknown): { code: number; message: string } {
  if (e instanceof UsageError || e instanceof ConfigError) return { code: EXIT_USAGE, message: e.message };
  if (e instanceof SocketPathError || e instanceof SourceFormatError) return { code: EXIT_USAGE, message: e.message };
  if (e instanceof ConnectTimeoutError || e instanceof ProtocolError) return { code: EXIT_FAILURE, message: e.message };
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ENOENT" && err.path) return { code: EXIT_FAILURE, message: `no such file: ${err.path}` };
  if (err?.code && err.path) return { code: EXIT_FAILURE, message: `${err.path}: ${err.code}` };
  return { code: EXIT_FAILURE, message: err?.message ?? String(e) };
}
