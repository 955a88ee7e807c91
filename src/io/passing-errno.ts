/**
 * An open's errno that says nothing of the path, only of this moment: the
 * process (EMFILE) or the system (ENFILE) has no descriptor free, or the call
 * was cut short (EINTR) or told to try again (EAGAIN). A later try may well
 * succeed, so a channel that meets one goes on and tries again on its own
 * schedule instead of ending.
 */
function passingOpenError(code: string | undefined): boolean {
  return code === "EMFILE" || code === "ENFILE" || code === "EINTR" || code === "EAGAIN";
}

/**
 * A shortage an opener meets again at each try (passingOpenError), told
 * once (`tell`), and anew only after a try that did not meet it (`over`).
 */
export class PassingShortage {
  private told = false;

  constructor(private readonly tell: (code: string) => void) {}

  /** Whether the shortage holds now: since the last try that did not meet one. */
  get on(): boolean {
    return this.told;
  }

  /** Whether an open's `code` is a passing one; the first of a shortage is told. */
  met(code: string | undefined): boolean {
    if (!passingOpenError(code)) return false;
    if (!this.told) this.tell(code!);
    this.told = true;
    return true;
  }

  /** A try opened, or failed otherwise: a shortage after it is told anew. */
  over(): void {
    this.told = false;
  }
}
