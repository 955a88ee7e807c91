import { readFileSync } from "node:fs";
import { endianness } from "node:os";

/**
 * Who is at the other end of a TCP connection from this machine, and whether
 * that user may have what the agent's socket carries. Loopback keeps other
 * machines out, not other users of this one: the kernel's table of TCP
 * sockets (/proc/net/tcp and tcp6, readable by all) names the owner of each,
 * so the peer's own socket (its address and port, connected to ours) gives
 * its uid, as `ss -e` shows it.
 */

/** One end of a TCP connection, as Bun's socket gives it. */
export interface Endpoint {
  address: string;
  port: number;
}

/**
 * The uid owning the socket of this machine that is `peer`, connected to
 * `local`; undefined when there is none (a peer on another machine, or one
 * already closed: what is left of it, TIME_WAIT or FIN_WAIT2 after a close,
 * is no one's socket, has no inode, and the kernel lists it as root's).
 */
export function localPeerUid(peer: Endpoint, local: Endpoint): number | undefined {
  for (const [table, form] of [
    ["/proc/net/tcp", v4Form],
    ["/proc/net/tcp6", v6Form],
  ] as const) {
    const peerKey = endpointKey(peer, form);
    const localKey = endpointKey(local, form);
    if (peerKey === undefined || localKey === undefined) continue;
    let text: string;
    try {
      text = readFileSync(table, "latin1");
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split("\n")) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
      const fields = line.trim().split(/\s+/);
      if (fields[1] === peerKey && fields[2] === localKey) return fields[9] === "0" ? undefined : Number(fields[7]);
    }
  }
  return undefined;
}

/** `ADDRESS:PORT` as the kernel's table writes it: each 32-bit word of the address in this machine's byte order, in hex. */
function endpointKey({ address, port }: Endpoint, form: (bytes: Uint8Array) => Uint8Array | undefined): string | undefined {
  const parsed = addressBytes(address);
  const bytes = parsed && form(parsed);
  if (!bytes) return undefined;
  const little = endianness() === "LE";
  let hex = "";
  for (let word = 0; word < bytes.length; word += 4) {
    for (let i = 0; i < 4; i++) hex += bytes[word + (little ? 3 - i : i)]!.toString(16).padStart(2, "0");
  }
  return `${hex.toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** Whether `text` is a loopback address: 127.0.0.0/8 (mapped into IPv6 too) or ::1. */
export function loopbackAddress(text: string): boolean {
  const bytes = addressBytes(text);
  if (!bytes) return false;
  const v4 = v4Form(bytes);
  return v4 ? v4[0] === 127 : bytes.every((b, i) => b === (i === 15 ? 1 : 0));
}

/** An IPv4 address (or IPv4-mapped IPv6) as its 4 bytes, for /proc/net/tcp. */
function v4Form(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length === 4) return bytes;
  const mapped = bytes.subarray(0, 12).every((b, i) => b === (i < 10 ? 0 : 0xff));
  return mapped ? bytes.subarray(12) : undefined;
}

/** Any address as 16 bytes (IPv4 mapped), for /proc/net/tcp6, where a dual-stack socket lists it. */
function v6Form(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16) return bytes;
  const mapped = new Uint8Array(16);
  mapped[10] = mapped[11] = 0xff;
  mapped.set(bytes, 12);
  return mapped;
}

/** An address in text (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`) as 4 or 16 bytes; undefined if it is neither. */
export function addressBytes(text: string): Uint8Array | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    return parts.every((p) => p <= 255) ? Uint8Array.from(parts) : undefined;
  }
  const halves = text.replace(/%.*$/, "").split("::");
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    for (const part of half.split(":")) {
      const tail = part.includes(".") ? addressBytes(part) : undefined;
      if (tail?.length === 4) out.push((tail[0]! << 8) | tail[1]!, (tail[2]! << 8) | tail[3]!);
      else if (/^[0-9a-f]{1,4}$/i.test(part)) out.push(parseInt(part, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const rest = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !rest) return undefined;
  const gap = 8 - head.length - rest.length;
  if (halves.length === 2 ? gap < 1 : gap !== 0) return undefined;
  const words = [...head, ...new Array<number>(halves.length === 2 ? gap : 0).fill(0), ...rest];
  const bytes = new Uint8Array(16);
  words.forEach((w, i) => {
    bytes[2 * i] = w >> 8;
    bytes[2 * i + 1] = w & 0xff;
  });
  return bytes;
}

/** The agent's user and group, which own the sockets it makes. */
export interface Owner {
  uid: number;
  gid: number;
}

export const agentOwner = (): Owner => ({ uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 });

/**
 * Whether user `uid` may connect to a Unix socket of `mode` that `owner`
 * made, as the kernel judges it: root always; else write permission from
 * the one class the user falls in (owner, group, others). A user's groups
 * are its primary group and the groups listing it, in /etc/passwd and
 * /etc/group (what a login, an SSH session among them, is given).
 */
export function mayConnect(uid: number, mode: number, owner: Owner = agentOwner()): boolean {
  if (uid === 0) return true;
  if (uid === owner.uid) return (mode & 0o200) !== 0;
  if (groupsOf(uid).includes(owner.gid)) return (mode & 0o020) !== 0;
  return (mode & 0o002) !== 0;
}

/** The groups of user `uid` by the system's files: its primary gid and the groups naming it. */
function groupsOf(uid: number): number[] {
  const user = databaseRows("/etc/passwd").find((row) => Number(row[2]) === uid && row[2] !== "");
  if (!user) return [];
  const groups = [Number(user[3])];
  for (const row of databaseRows("/etc/group")) {
    if ((row[3] ?? "").split(",").includes(user[0]!)) groups.push(Number(row[2]));
  }
  return groups;
}

function databaseRows(path: string): string[][] {
  try {
    return readFileSync(path, "utf8")
      .split("\n")
      .filter((line) => line !== "" && !line.startsWith("#"))
      .map((line) => line.split(":"));
  } catch {
    return [];
  }
}
