import { readFileSync } from "node:fs";
import { descriptorKind, type DescriptorKind } from "./descriptor-kind.ts";
import { fileName } from "./file-placement.ts";

/** O_APPEND among a description's flags, as /proc/PID/fdinfo shows them (octal). */
const O_APPEND = 0o2000;

/** What a log that is not a file is, in its operator's words. */
const NOT_A_FILE: Record<Exclude<DescriptorKind, "file">, string> = { pipe: "a pipe", socket: "a socket", terminal: "a terminal or device", other: "not a regular file" };

/**
 * The regular file `fd` appends to (a shell's `2>>FILE`): its name now; or
 * what `fd` is instead, said as a log's operator would put it.
 */
export function appendedFile(fd: number): { path: string } | { not: string } {
  try {
    const kind = descriptorKind(fd);
    if (kind !== "file") return { not: NOT_A_FILE[kind] };
    if (!appends(fd)) return { not: "a file not opened for appending (2>FILE, where 2>>FILE appends)" };
    const path = fileName(fd);
    return path === undefined ? { not: "a file that has no name left (removed)" } : { path };
  } catch (e) {
    return { not: `not to be looked at (${(e as NodeJS.ErrnoException).code ?? e})` };
  }
}

/** Whether the description `fd` is open on appends (O_APPEND): each write goes to the file's end, wherever that is now. */
export function appends(fd: number): boolean {
  const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1];
  return flags !== undefined && (parseInt(flags, 8) & O_APPEND) !== 0;
}
