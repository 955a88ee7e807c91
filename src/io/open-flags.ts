/** Linux's O_PATH (node:fs has no constant for it): a descriptor for fstat and /proc/self/fd that neither reads nor writes. */
export const O_PATH = 0o10000000;
