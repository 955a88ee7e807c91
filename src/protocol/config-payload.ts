import { ProtocolError } from "./errors.ts";
import { CONFIG_PAYLOAD_SIZE } from "./limits.ts";

/** The input channel's Config payload: what the microphone frames carry. */
export interface AudioConfig {
  sampleRate: number;
  channels: number;
  /** Samples per channel per frame (960 = 20 ms at 48 kHz). */
  frameSize: number;
}

export const DEFAULT_AUDIO_CONFIG: Readonly<AudioConfig> = {
  sampleRate: 48000,
  channels: 2,
  frameSize: 960,
};

/** The rates an Opus decoder runs at (RFC 6716): the only ones a Config should name. */
export const OPUS_SAMPLE_RATES = [8000, 12000, 16000, 24000, 48000] as const;

/** Frame durations Opus has (RFC 6716: 2.5 to 60 ms a frame, up to 120 ms a packet), in tenths of a ms. */
const OPUS_FRAME_TENTHS_MS = [25, 50, 100, 200, 400, 600, 800, 1000, 1200];

/**
 * Whether a Config names audio Opus has: a decoder's rate, mono or stereo (all the wire's
 * frames carry), and a frame size that is one of Opus's durations at that rate.
 */
export function isOpusConfig(config: AudioConfig): boolean {
  if (!(OPUS_SAMPLE_RATES as readonly number[]).includes(config.sampleRate)) return false;
  if (config.channels !== 1 && config.channels !== 2) return false;
  return OPUS_FRAME_TENTHS_MS.includes((config.frameSize * 10_000) / config.sampleRate);
}

export function sameAudioConfig(a: AudioConfig, b: AudioConfig): boolean {
  return a.sampleRate === b.sampleRate && a.channels === b.channels && a.frameSize === b.frameSize;
}

export function encodeConfigPayload(config: AudioConfig): Uint8Array {
  const bytes = new Uint8Array(CONFIG_PAYLOAD_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, config.sampleRate, true);
  view.setUint32(4, config.channels, true);
  view.setUint32(8, config.frameSize, true);
  return bytes;
}

export function decodeConfigPayload(payload: Uint8Array): AudioConfig {
  if (payload.length !== CONFIG_PAYLOAD_SIZE) {
    throw new ProtocolError(
      "BadConfig",
      payload.length,
      `BadConfig: payload is ${payload.length} bytes, expected ${CONFIG_PAYLOAD_SIZE}`,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    sampleRate: view.getUint32(0, true),
    channels: view.getUint32(4, true),
    frameSize: view.getUint32(8, true),
  };
}
