/**
 * The Go original's connect backoff: 50 ms doubling every third attempt
 * (50, 50, 50, 100, 100, 100, 200, 200, 200, ...), capped at 400 ms.
 */
export function backoffDelayMs(attempt: number): number {
  return Math.min(50 * 2 ** Math.floor(attempt / 3), 400);
}
