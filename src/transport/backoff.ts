/**
 * The Go original's connect backoff: 50 ms doubling every third attempt
 * (50, 50, 50, 100, 100, 100, 200, 200, 200, ...), capped at 400 ms.
 */
export function backoffDelayMs(attempt: number): number {
  return Math.min(50 * 2 ** Math.floor(attempt / 3), 400);
}

/** A session that lasted this long was healthy: the next connection is made at once. */
export const HEALTHY_SESSION_MS = 1000;

/**
 * The wait before connecting again after `early` sessions in a row ended
 * within HEALTHY_SESSION_MS (a server that drops us at once, a competing
 * client that takes our place): 50 ms doubling per such session, capped at
 * 5 s, each wait a random half to all of that so that competing clients
 * drift apart instead of replacing each other in step. 0 after a healthy session.
 */
export function sessionBackoffMs(early: number, random: () => number = Math.random): number {
  if (early <= 0) return 0;
  const full = Math.min(50 * 2 ** (early - 1), 5000);
  return Math.round(full * (0.5 + random() / 2));
}
