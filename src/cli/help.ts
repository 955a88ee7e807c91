import { commandFlags, OPTIONS, unsetMeaning, writtenValue, type Channel, type Command } from "../config.ts";

export const TOP_HELP = `audio-agent: JetKVM-compatible audio IPC over Unix sockets

Usage:
  audio-agent output serve --source PATH|- [options]   capture side: stream Opus frames to the main app
  audio-agent output recv  --sink PATH|-   [options]   main-app side: receive the output channel
  audio-agent input serve  --sink PATH|-   [options]   playback side: receive microphone frames, answer with Acks
  audio-agent input send   --source PATH|- [options]   main-app side: send Config, frames, Heartbeats, Stop
  audio-agent serve --output-source PATH|- --input-sink PATH|- [options]
                                                        output serve and input serve in one process
  audio-agent config check FILE | config print [ROLE]  validate a config file, show effective settings
  audio-agent bench [--quick]                           measure throughput, latency, CPU and memory
  audio-agent --version
  audio-agent <command> --help, audio-agent help <command>
                                                        options of one command

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
Logs go to stderr; stdout carries data only (--sink -).
`;

export const CHANNEL_HELP: Record<Channel, string> = {
  output: `audio-agent output: the output channel (magic JKOU, capture -> main app)

  audio-agent output serve --source PATH|- [options]
  audio-agent output recv  --sink PATH|-   [options]

Run "audio-agent output serve --help" or "audio-agent output recv --help" for options.
`,
  input: `audio-agent input: the input channel (magic JKMI, main app -> playback)

  audio-agent input serve --sink PATH|-    [options]
  audio-agent input send  --source PATH|-  [options]

Run "audio-agent input serve --help" or "audio-agent input send --help" for options.
`,
};

export function roleHelp(command: Command): string {
  const lines = [`Usage: audio-agent ${command} [options]`, ""];
  if (command === "serve") {
    lines.push(
      "Runs output serve and input serve in one process. Each channel takes its role's options",
      "with the channel's prefix (--output-*, --input-*); the process-wide ones are given once.",
      "A channel that ends (a file played out, --input-once) stops alone; a failure of either",
      "stops the other and ends the process with that failure.",
      "",
    );
  }
  lines.push("Options:");
  for (const { flag, option, env, default: value } of commandFlags(command)) {
    const spec = OPTIONS[option];
    const arg = spec.flag === "boolean" ? "" : ` <${spec.allowed}>`;
    const shown = value === undefined ? unsetMeaning(option) : typeof value === "boolean" ? (value ? "on" : "off") : writtenValue(option, value);
    const def = shown === undefined ? "" : ` (default: ${shown})`;
    lines.push(`  --${flag}${arg}`, `      ${spec.help}${def}; env ${env}`);
  }
  lines.push(
    "  --config <file>",
    "      JSON config file (default /etc/audio-agent.json when it exists); env AUDIO_AGENT_CONFIG",
    "  -h, --help",
    "      this text",
    "",
    "Precedence: flags > environment > config file > defaults. A switch is turned off",
    "by --no-NAME (or --NAME=false), as against a config file or the environment.",
    "",
  );
  return lines.join("\n");
}
