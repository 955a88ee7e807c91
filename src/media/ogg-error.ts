/** Malformed Ogg or Ogg Opus input, located at a byte offset of the stream. */
export class OggError extends Error {
  constructor(
    message: string,
    /** Byte offset in the stream of the offending page or packet. */
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = "OggError";
  }
}
