import {
  ConfigError,
  environmentWarnings,
  loadConfigFile,
  namedConfigFile,
  PROCESS_OPTIONS,
  readFlags,
  checkServeSockets,
  resolveServeSettings,
  resolveSettings,
  ROLE_OPTIONS,
  SERVE_ROLES,
  shownValue,
  writtenValue,
  type Command,
  type ConfigSources,
  type OptionName,
} from "../config.ts";
import { EXIT_OK, EXIT_USAGE, refuseExtra, UsageError } from "./errors.ts";
import { oneLine } from "../observe/logger.ts";

const COMMANDS = [...Object.keys(ROLE_OPTIONS), "serve"] as Command[];

const CONFIG_HELP = `audio-agent config: check and show configuration

  audio-agent config check FILE                 validate a config file (exit 0 ok, 2 with the first problem);
                                                warn of AUDIO_AGENT_* names in the environment no role reads
  audio-agent config print [ROLE] [--config F]  the effective settings as JSON (defaults < file < environment);
                                                one role's output is itself a valid config file

ROLE is one of: ${COMMANDS.map((r) => `"${r}"`).join(", ")} (all when omitted).
The config file is JSON: any option name (as in --help, without dashes) at the top level applies
to every role; an "output" or "input" section applies to that channel only, takes the options
its roles read, and wins over the top level. serve reads each channel's settings as that channel's role does, and its process-wide
ones (${PROCESS_OPTIONS.join(", ")}) once:
a section may give one where the other section agrees or is silent. Flags win over the
environment (AUDIO_AGENT_*; in serve AUDIO_AGENT_OUTPUT_* and AUDIO_AGENT_INPUT_* for a channel's
options; JETKVM_AUDIO_*_SOCKET), which wins over the file. Without --config, AUDIO_AGENT_CONFIG or
/etc/audio-agent.json (when it exists) is read.
`;

export interface ConfigIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

const HELP_FLAG = { type: "boolean", short: "h" } as const;

/** `audio-agent config ...` */
export async function configCommand(args: string[], io: ConfigIo): Promise<number> {
  const [verb, ...rest] = args;
  // Help asked for goes to stdout; help instead of a verb missing is a usage error: stderr, exit 2.
  if (verb === undefined) {
    io.err(CONFIG_HELP);
    return EXIT_USAGE;
  }
  if (verb === "--help" || verb === "-h") return help(io, `config ${verb}`, rest);
  if (verb === "check") {
    const { values, positionals } = readFlags(rest, { help: HELP_FLAG }, "config check");
    if (values.help) return help(io, "config check --help", positionals);
    if (positionals.length !== 1) throw new UsageError("config check takes one argument: the config file (see audio-agent config --help)");
    // Named as an empty --config is: "" is no file's name.
    if (positionals[0] === "") throw new UsageError(`config check "" is not allowed: a JSON file`);
    // The environment's names that do nothing, as a role's start logs them: a file checked is half of the settings.
    for (const warning of environmentWarnings(io.env)) io.err(`audio-agent: config check: ${warning}\n`);
    const file = await loadConfigFile(positionals[0]);
    const count = Object.keys(file!.top).length + Object.values(file!.sections).reduce((n, s) => n + Object.keys(s ?? {}).length, 0);
    // The path as an error line would show it: a newline in a file's name does not split the line.
    io.out(`${oneLine(positionals[0])}: ok (${count} setting${count === 1 ? "" : "s"})\n`);
    return EXIT_OK;
  }
  if (verb === "print") {
    const { values, positionals } = readFlags(rest, { help: HELP_FLAG, config: { type: "string", allowed: "a JSON file" } }, "config print");
    if (values.help) return help(io, "config print --help", positionals);
    const roles = positionals.length === 0 ? COMMANDS : [positionals.join(" ") as Command];
    for (const role of roles) {
      if (!COMMANDS.includes(role)) {
        throw new UsageError(`config print: unknown role ${shownValue(role)}; allowed: ${COMMANDS.join(", ")}`);
      }
    }
    // What is printed is what the environment gives: a name that gives nothing is said, as a role's start says it.
    for (const warning of environmentWarnings(io.env, roles.length === 1 ? roles[0] : undefined)) io.err(`audio-agent: config print: ${warning}\n`);
    const file = await loadConfigFile(namedConfigFile(values.config, io.env));
    // Each role's settings as a config file writes them: `config print ROLE > f.json` passes `config check f.json`.
    const sources: ConfigSources = { flags: {}, env: io.env, file };
    // serve is refused as a serve run refuses it: what it prints must run. Among all roles, a file
    // serve refuses (sections that give a process-wide option differently, a top-level "socket"
    // that gives both channels one: files for single roles) shows serve as null with the reason on
    // stderr, and the single roles as they run with it.
    const serveShown = (): Record<string, unknown> | null => {
      if (roles.length === 1) return serveFile(sources);
      try {
        return serveFile(sources);
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        io.err(`audio-agent: config print: serve not shown: ${error.message}\n`);
        return null;
      }
    };
    const effective = Object.fromEntries(roles.map((role) => [role, role === "serve" ? serveShown() : written(resolveSettings(role, sources, false))]));
    const shown = roles.length === 1 ? effective[roles[0]] : { config_file: file?.path ?? null, ...effective };
    io.out(JSON.stringify(shown, null, 2) + "\n");
    return EXIT_OK;
  }
  throw new UsageError(`unknown config command ${shownValue(verb)}; allowed: check, print`);
}

/** Settings as a config file writes them. */
function written(settings: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(settings).map(([name, value]) => [name, writtenValue(name as OptionName, value)]));
}

/** serve's settings as a config file: the process-wide ones at the top level, each channel's own in its section. */
function serveFile(sources: ConfigSources): Record<string, unknown> {
  const settings = resolveServeSettings(sources, false);
  checkServeSockets(settings, sources);
  const shared = (name: string) => (PROCESS_OPTIONS as readonly string[]).includes(name);
  const section = (channel: keyof typeof SERVE_ROLES) => written(Object.fromEntries(Object.entries(settings[channel]).filter(([name]) => !shared(name))));
  const top = written(Object.fromEntries(Object.entries(settings).filter(([name]) => shared(name))));
  return { ...top, output: section("output"), input: section("input") };
}

/** The help, asked for by `asked`, with no words after it. */
function help(io: ConfigIo, asked: string, extra: string[]): number {
  refuseExtra(asked, extra, "audio-agent config --help");
  io.out(CONFIG_HELP);
  return EXIT_OK;
}
