/**
 * A small seeded PRNG (sfc32, seeded through splitmix32) for fuzzing and
 * soak runs: the same seed gives the same cases on every machine, so any
 * failure can be replayed from the seed and case number it prints.
 */

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const mix = splitmix32(seed);
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** The seed of case `index` of a run seeded with `seed`: cases replay one by one. */
  static caseSeed(seed: number, index: number): number {
    const mix = splitmix32((seed ^ Math.imul(index + 1, 0x27d4eb2f)) >>> 0);
    mix();
    return mix();
  }

  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform integer in [min, max] (inclusive). */
  int(min: number, max: number): number {
    return min + Math.floor((this.u32() / 4294967296) * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** A fresh random 32-bit seed, for runs that were not given one. */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/** Reads a seed given as decimal or 0x-hex. */
export function parseSeed(text: string): number {
  const n = text.startsWith("0x") ? parseInt(text.slice(2), 16) : Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`seed ${text}: expected an integer 0..2^32-1`);
  return n >>> 0;
}
