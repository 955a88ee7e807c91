import { loadConfigFile, readFlags, resolveSettings, ROLE_OPTIONS, writtenValue, type OptionName, type Role } from "../config.ts";
import { EXIT_OK, EXIT_USAGE, UsageError } from "./errors.ts";

export const CONFIG_HELP = `audio-agent config: check and show configuration

  audio-agent config check FILE                 validate a config file (exit 0 ok, 2 with the first problem)
  audio-agent config print [ROLE] [--config F]  the effective settings as JSON (defaults < file < environment);
                                                one role's output is itself a valid config file

ROLE is one of: ${Object.keys(ROLE_OPTIONS).map((r) => `"${r}"`).join(", ")} (all when omitted).
The config file is JSON: any option name (as in --help, without dashes) at the top level applies
to every role; an "output" or "input" section applies to that channel only and wins over the
top level. Flags win over the environment (AUDIO_AGENT_*, JETKVM_AUDIO_*_SOCKET), which wins over
the file. Without --config, AUDIO_AGENT_CONFIG or /etc/audio-agent.json (when it exists) is read.
`;

export interface ConfigIo {
  out: (text: string) => void;
  env: Record<string, string | undefined>;
}

const HELP_FLAG = { type: "boolean", short: "h" } as const;

/** `audio-agent config ...` */
export async function configCommand(args: string[], io: ConfigIo): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === undefined || verb === "--help" || verb === "-h") {
    io.out(CONFIG_HELP);
    return verb === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (verb === "check") {
    const { values, positionals } = readFlags(rest, { help: HELP_FLAG }, "config check");
    if (values.help) return help(io);
    if (positionals.length !== 1) throw new UsageError("config check takes one argument: the config file (see audio-agent config --help)");
    const file = await loadConfigFile(positionals[0]);
    const count = Object.keys(file!.top).length + Object.values(file!.sections).reduce((n, s) => n + Object.keys(s ?? {}).length, 0);
    io.out(`${positionals[0]}: ok (${count} setting${count === 1 ? "" : "s"})\n`);
    return EXIT_OK;
  }
  if (verb === "print") {
    const { values, positionals } = readFlags(rest, { help: HELP_FLAG, config: { type: "string", allowed: "a JSON file" } }, "config print");
    if (values.help) return help(io);
    const roles = (positionals.length === 0 ? Object.keys(ROLE_OPTIONS) : [positionals.join(" ")]) as Role[];
    for (const role of roles) {
      if (!(role in ROLE_OPTIONS)) {
        throw new UsageError(`config print: unknown role "${role}"; allowed: ${Object.keys(ROLE_OPTIONS).join(", ")}`);
      }
    }
    const file = await loadConfigFile((values.config as string | undefined) ?? io.env.AUDIO_AGENT_CONFIG);
    // Each role's settings as a config file writes them: `config print ROLE > f.json` passes `config check f.json`.
    const effective = Object.fromEntries(
      roles.map((role) => {
        const settings = resolveSettings(role, { flags: {}, env: io.env, file }, false) as Record<string, unknown>;
        return [role, Object.fromEntries(Object.entries(settings).map(([name, value]) => [name, writtenValue(name as OptionName, value)]))];
      }),
    );
    const shown = roles.length === 1 ? effective[roles[0]] : { config_file: file?.path ?? null, ...effective };
    io.out(JSON.stringify(shown, null, 2) + "\n");
    return EXIT_OK;
  }
  throw new UsageError(`unknown config command "${verb}"; allowed: check, print`);
}

function help(io: ConfigIo): number {
  io.out(CONFIG_HELP);
  return EXIT_OK;
}
