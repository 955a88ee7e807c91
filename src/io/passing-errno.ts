/**
 * An open's errno that says nothing of the path, only of this moment: the
 * process (EMFILE) or the system (ENFILE) has no descriptor free, or the call
 * was cut short (EINTR) or told to try again (EAGAIN). A later try may well
 * succeed, so a channel that meets one goes on and tries again on its own
 * schedule instead of ending.
 */
export function passingOpenError(code: string | undefined): boolean {
  return code === "EMFILE" || code === "ENFILE" || code === "EINTR" || code === "EAGAIN";
}
