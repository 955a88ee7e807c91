import { readFileSync } from "node:fs";
import { firstNonUtf8, isUtf8, shownValue } from "../config.ts";
import { UsageError } from "./errors.ts";

/**
 * The runtime reads the process's arguments and environment as UTF-8, each
 * byte that is not UTF-8 becoming U+FFFD: a Latin-1 "é" in `--sink` would
 * name, create or connect to another file than the one given. Such a value is
 * refused (exit 2), as a config file's byte that is not UTF-8 is. Only a value
 * holding U+FFFD can be one; its bytes, as the kernel keeps them
 * (/proc/self/cmdline, /proc/self/environ), tell whether it is.
 */
export function refuseNonUtf8(argv: readonly string[], env: Record<string, string | undefined>): void {
  if (argv.some((arg) => arg.includes("\uFFFD"))) {
    // The process's own arguments end its command line; a list that is not them (in-process callers) is left alone.
    const raw = entries("/proc/self/cmdline")?.slice(-argv.length);
    if (raw?.length === argv.length && raw.every((bytes, i) => bytes.toString("utf8") === argv[i])) {
      const i = raw.findIndex((bytes) => !isUtf8(bytes));
      if (i >= 0) throw notUtf8(`argument ${i + 1} of the command line, ${shownValue(argv[i])}`, raw[i]!);
    }
  }
  const names = Object.keys(env).filter((name) => (name.startsWith("AUDIO_AGENT_") || name.startsWith("JETKVM_AUDIO_")) && env[name]?.includes("\uFFFD"));
  if (names.length === 0) return;
  for (const entry of entries("/proc/self/environ") ?? []) {
    const at = entry.indexOf("=");
    const name = entry.subarray(0, at).toString("utf8");
    const value = entry.subarray(at + 1);
    if (at > 0 && names.includes(name) && value.toString("utf8") === env[name] && !isUtf8(value)) {
      throw notUtf8(`environment ${name}=${shownValue(env[name])}`, value);
    }
  }
}

function notUtf8(what: string, bytes: Buffer): UsageError {
  const at = firstNonUtf8(bytes);
  return new UsageError(`${what}: byte 0x${bytes[at]!.toString(16).padStart(2, "0")} at offset ${at} is not UTF-8; read as UTF-8, a path would name another file`);
}

/** The NUL-terminated entries of a /proc file; undefined where it cannot be read. */
function entries(path: string): Buffer[] | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return undefined;
  }
  const out: Buffer[] = [];
  for (let start = 0, end; start < bytes.length; start = end + 1) {
    end = bytes.indexOf(0, start);
    if (end < 0) end = bytes.length;
    out.push(bytes.subarray(start, end));
  }
  return out;
}
