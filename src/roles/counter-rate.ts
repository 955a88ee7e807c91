/**
 * How fast a count that only grows (frames, connections) grew, judged over
 * at least `overMs` however often it is sampled: the sampler can tick every
 * 10 ms (--adaptive-window-ms), and a short tick is no measure of a rate.
 */
export class CounterRate {
  constructor(
    private seen: number,
    private at: number,
    private readonly overMs: number,
  ) {}

  /**
   * Once `overMs` have passed since the last judgement: the count's growth
   * since then and the seconds it took (the count is read only then).
   * Undefined before.
   */
  judge(count: () => number, now: number): { fresh: number; seconds: number } | undefined {
    if (now - this.at < this.overMs) return undefined;
    const counted = count();
    const judged = { fresh: counted - this.seen, seconds: (now - this.at) / 1000 };
    this.seen = counted;
    this.at = now;
    return judged;
  }
}
