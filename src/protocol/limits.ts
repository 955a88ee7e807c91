/** Sizes fixed by the wire protocol (README, "The wire contract in short"). */

/** magic u32 + type u8 + length u32 + timestamp i64. */
export const HEADER_SIZE = 17;

/** Largest legal payload; a header announcing more is a protocol error. */
export const MAX_PAYLOAD = 4096;

/** Largest legal message on the wire. */
export const MAX_MESSAGE = HEADER_SIZE + MAX_PAYLOAD;

/** The Config payload: sampleRate u32, channels u32, frameSize u32. */
export const CONFIG_PAYLOAD_SIZE = 12;

/** The channels' Unix socket paths: sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

/** A socket path's directory: sun_path keeps room for "/." and one character of the hidden name a socket is bound by first. */
export const MAX_SOCKET_DIRECTORY = MAX_SOCKET_PATH - 3;
