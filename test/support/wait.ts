/**
 * Resolves once `check` holds, polling every `everyMs`; rejects with "timed
 * out waiting for <what>" after `timeoutMs`. `check` may be async (a fetch).
 */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20000, everyMs = 5): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}
