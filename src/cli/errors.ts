import { shownValue } from "../config.ts";

/** Bad usage or configuration: exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** `asked` (a version or help request) takes no words after it: the first of `extra` is a mistake to tell, not to pass over. */
export function refuseExtra(asked: string, extra: readonly (string | undefined)[], see: string): void {
  if (extra[0] !== undefined) throw new UsageError(`${asked} takes no arguments, found ${shownValue(extra[0])} (see ${see})`);
}

/** stdout did not take what a command prints (a full disk, a reader gone): `code`, the errno. */
export class StdoutError extends Error {
  constructor(readonly code: string) {
    super(`stdout: cannot write (${code})`);
    this.name = "StdoutError";
  }
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
