import pkg from "../../package.json" with { type: "json" };

// Baked in by build.ts (`define`); absent when running from source.
declare const AUDIO_AGENT_COMMIT: string | undefined;

const VERSION: string = pkg.version;
const COMMIT: string = typeof AUDIO_AGENT_COMMIT === "string" ? AUDIO_AGENT_COMMIT : "source";

export function versionLine(): string {
  return `audio-agent ${VERSION} (commit ${COMMIT}, bun ${Bun.version})`;
}
