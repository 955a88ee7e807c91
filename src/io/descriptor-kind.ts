import { fstatSync } from "node:fs";

/** What a descriptor is open on: a character device is a terminal or another device (/dev/null, /dev/console). */
export type DescriptorKind = "file" | "pipe" | "terminal" | "socket" | "other";

/** The kind of what `fd` is open on, by fstat; throws as fstat does (EBADF: nothing open there). */
export function descriptorKind(fd: number): DescriptorKind {
  const stat = fstatSync(fd);
  return stat.isFile() ? "file" : stat.isFIFO() ? "pipe" : stat.isCharacterDevice() ? "terminal" : stat.isSocket() ? "socket" : "other";
}
