import { ptr, type Library } from "bun:ffi";
import { lstatSync, readFileSync } from "node:fs";
import { endianness, networkInterfaces } from "node:os";
import { AF_INET, ERRNO_LOCATION, errnoName, lastErrnoName, MSG_DONTWAIT, openLibc, SOCK_CLOEXEC, SOCK_DGRAM } from "../io/libc.ts";

/**
 * Who is at the other end of a TCP connection from this machine, and whether
 * that user may have what the agent's socket carries. Loopback keeps other
 * machines out, not other users of this one: the kernel's socket
 * diagnostics (sock_diag over netlink, which `ss -e` asks too, open to every
 * user) name the owner of the peer's own socket, looked up by its address
 * and port and ours: one look-up a connection, whatever the number of
 * sockets on the machine. (/proc/net/tcp lists the same, but only whole: any
 * user can fill it with closed connections, and reading it for each
 * connection stalled the agent's one thread, and the audio, for seconds.)
 */

/** One end of a TCP connection, as Bun's socket gives it. */
export interface Endpoint {
  address: string;
  port: number;
}

const AF_INET6 = 10;
const AF_NETLINK = 16;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const IPPROTO_TCP = 6;
/** A listening socket, which the kernel's look-up falls back to when no connected one matches. */
const TCP_LISTEN = 10;
/** nlmsghdr, then inet_diag_req_v2 (family, protocol, ext, pad, states, inet_diag_sockid). */
const REQUEST_BYTES = 16 + 56;
/** nlmsghdr, then inet_diag_msg (family, state, timer, retrans, inet_diag_sockid, expires, rqueue, wqueue, uid, inode). */
const REPLY_BYTES = 16 + 72;

const SYMBOLS = {
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  // ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
  sendto: { args: ["i32", "ptr", "u64", "i32", "ptr", "u32"], returns: "i64" },
  // ssize_t recv(int fd, void *buf, size_t len, int flags)
  recv: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
  close: { args: ["i32"], returns: "i32" },
  __errno_location: ERRNO_LOCATION,
} as const;

/** libc, once loaded; or why the kernel cannot be asked. */
let diagnostics: { library: Library<typeof SYMBOLS> } | { why: string } | undefined;
/** sockaddr_nl of the kernel (pid 0), and the buffers: one look-up at a time (JS calls libc on one thread). */
const KERNEL = new Uint8Array(12);
new DataView(KERNEL.buffer).setUint16(0, AF_NETLINK, true);
const request = new Uint8Array(REQUEST_BYTES);
const reply = new Uint8Array(1024);

function library(): Library<typeof SYMBOLS> | string {
  if (!diagnostics) {
    const opened = openLibc(SYMBOLS);
    diagnostics = opened.library ? { library: opened.library } : { why: opened.detail };
  }
  return "library" in diagnostics ? diagnostics.library : diagnostics.why;
}

/**
 * Why the kernel cannot be asked who owns a TCP socket, with no local peer
 * then told apart; undefined when it can.
 */
export function peerLookupUnavailable(): string | undefined {
  unavailable ??= { why: socketDiagnosticsMissing(AF_INET, IPPROTO_TCP) };
  return unavailable.why;
}

let unavailable: { why: string | undefined } | undefined;

/**
 * Why the kernel's socket diagnostics cannot list the sockets of `family`
 * and `protocol`: no libc, no netlink socket for them (a seccomp filter, a
 * service's RestrictAddressFamilies, qemu-user), or none for that family or
 * protocol (a kernel built without CONFIG_INET_DIAG or its TCP part, whose
 * netlink socket opens all the same and answers ENOENT to every look-up, as
 * for a socket that is not there); undefined when they can. What is asked
 * for is a listing of the sockets in no state: empty, where it can be made.
 */
export function socketDiagnosticsMissing(family: number, protocol: number): string | undefined {
  const libc = library();
  if (typeof libc === "string") return libc;
  const fd = libc.symbols.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return `socket(AF_NETLINK, NETLINK_SOCK_DIAG) failed: ${lastErrnoName(libc.symbols)}`;
  try {
    request.fill(0);
    const header = new DataView(request.buffer);
    header.setUint32(0, REQUEST_BYTES, true);
    header.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
    header.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
    request[16] = family;
    request[17] = protocol;
    // Every other field 0: the states wanted too, so that nothing is listed.
    if (Number(libc.symbols.sendto(fd, ptr(request), REQUEST_BYTES, 0, ptr(KERNEL), KERNEL.length)) !== REQUEST_BYTES) {
      return `sock_diag refused a request: ${lastErrnoName(libc.symbols)}`;
    }
    // The reply is queued before sendto returns (the kernel answers in the sender's call): never wait for it.
    const got = Number(libc.symbols.recv(fd, ptr(reply), reply.length, MSG_DONTWAIT));
    const answer = new DataView(reply.buffer);
    // A missing family's handler answers NLMSG_ERROR; a missing protocol's, the listing's NLMSG_DONE with the error.
    const type = got >= 20 ? answer.getUint16(4, true) : -1;
    const error = type === NLMSG_ERROR || type === NLMSG_DONE ? answer.getInt32(16, true) : 0;
    if (type === -1) return "sock_diag gave no answer";
    if (error !== 0) return `sock_diag has no sockets of family ${family} protocol ${protocol} to list (${errnoName(-error)}: a kernel built without CONFIG_INET_DIAG or its TCP part)`;
    return undefined;
  } finally {
    libc.symbols.close(fd);
  }
}

/**
 * localPeerUid where the kernel has no socket diagnostics to ask (built
 * without CONFIG_INET_DIAG, or under qemu-user): the peer's socket found in
 * the kernel's whole table, /proc/net/tcp or tcp6, which costs a moment of
 * the agent's one thread for every socket on the machine, at each
 * connection. An entry with no inode is what is left of a closed socket.
 */
export function peerUidFromTable(peer: Endpoint, local: Endpoint): number | undefined {
  for (const [table, form] of [
    ["/proc/net/tcp", v4Form],
    ["/proc/net/tcp6", v6Form],
  ] as const) {
    const peerKey = tableKey(peer, form);
    const localKey = tableKey(local, form);
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
      if (fields[1] !== peerKey || fields[2] !== localKey) continue;
      if (fields[9] === "0") return undefined;
      const uid = Number(fields[7]);
      return uid === unmappedUid() ? undefined : uid;
    }
  }
  return undefined;
}

/** `ADDRESS:PORT` as the kernel's table writes it: each 32-bit word of the address in this machine's byte order, in hex. */
function tableKey({ address, port }: Endpoint, form: (bytes: Uint8Array) => Uint8Array | undefined): string | undefined {
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

/** Any address as 16 bytes (IPv4 mapped), for /proc/net/tcp6, where a dual-stack socket lists it. */
function v6Form(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16) return bytes;
  const mapped = new Uint8Array(16);
  mapped[10] = mapped[11] = 0xff;
  mapped.set(bytes, 12);
  return mapped;
}

/**
 * The uid owning the socket of this machine that is `peer`, connected to
 * `local`; undefined when there is none (a peer on another machine, or one
 * already closed: what is left of it, TIME_WAIT or FIN_WAIT2 after a close,
 * is no one's socket, has no inode, and the kernel names it as root's) or
 * the kernel cannot be asked.
 */
export function localPeerUid(peer: Endpoint, local: Endpoint): number | undefined {
  const from = addressBytes(peer.address);
  const to = addressBytes(local.address);
  if (!from || !to) return undefined;
  const libc = library();
  if (typeof libc === "string" || peerLookupUnavailable() !== undefined) return peerUidFromTable(peer, local);
  // An IPv4 peer (mapped into IPv6 on a dual-stack socket) is looked up as IPv4, where the kernel finds either kind of socket.
  const v4 = v4Form(from) && v4Form(to) ? [v4Form(from)!, v4Form(to)!] : undefined;
  request.fill(0);
  const header = new DataView(request.buffer);
  header.setUint32(0, REQUEST_BYTES, true);
  header.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  header.setUint16(6, NLM_F_REQUEST, true);
  request[16] = v4 ? AF_INET : AF_INET6;
  request[17] = IPPROTO_TCP;
  header.setUint32(20, 0xffffffff, true); // every state
  // The peer's socket: its own address and port first (network byte order), then ours.
  header.setUint16(24, peer.port, false);
  header.setUint16(26, local.port, false);
  request.set(v4?.[0] ?? from, 28);
  request.set(v4?.[1] ?? to, 44);
  header.setUint32(64, 0xffffffff, true); // no cookie
  header.setUint32(68, 0xffffffff, true);
  // A link-local peer's socket is bound to its interface, and found only by it: the one of ours that has the address.
  const interfaces = !v4 && to[0] === 0xfe && (to[1]! & 0xc0) === 0x80 ? ownInterfaces(to) : [0];
  for (const index of interfaces) {
    header.setUint32(60, index, true);
    const uid = ask(libc, peer.port, local.port);
    if (uid !== undefined) return uid;
  }
  return undefined;
}

/** The request as it stands, sent on a netlink socket of its own: the uid in the kernel's answer, if it names a live socket with these ports. */
function ask(libc: Library<typeof SYMBOLS>, peerPort: number, localPort: number): number | undefined {
  const fd = libc.symbols.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return undefined;
  try {
    if (Number(libc.symbols.sendto(fd, ptr(request), REQUEST_BYTES, 0, ptr(KERNEL), KERNEL.length)) !== REQUEST_BYTES) return undefined;
    // The reply is queued before sendto returns (the kernel answers in the sender's call): never wait for it.
    const got = Number(libc.symbols.recv(fd, ptr(reply), reply.length, MSG_DONTWAIT));
    const answer = new DataView(reply.buffer);
    // An error (ENOENT: no such socket) comes as NLMSG_ERROR instead.
    if (got < REPLY_BYTES || answer.getUint16(4, true) !== SOCK_DIAG_BY_FAMILY) return undefined;
    const state = reply[17];
    const [sport, dport] = [answer.getUint16(20, false), answer.getUint16(22, false)];
    const [uid, inode] = [answer.getUint32(80, true), answer.getUint32(84, true)];
    // A socket with no inode is what is left of one closed; a listener is what the look-up falls back to.
    if (state === TCP_LISTEN || inode === 0 || sport !== peerPort || dport !== localPort) return undefined;
    return uid === unmappedUid() ? undefined : uid;
  } finally {
    libc.symbols.close(fd);
  }
}

let unmapped: { uid: number | undefined } | undefined;

/**
 * The uid the kernel names a user by whom this process's user namespace
 * does not map (the overflow uid, nobody's), when it leaves any unmapped
 * (systemd's PrivateUsers=yes maps root and the service's own user only):
 * that name is anyone's, so it names no one. Undefined when every uid is
 * mapped (the initial namespace).
 */
function unmappedUid(): number | undefined {
  unmapped ??= { uid: everyUidMapped() ? undefined : overflowUid() };
  return unmapped.uid;
}

function overflowUid(): number {
  try {
    return Number(readFileSync("/proc/sys/kernel/overflowuid", "utf8"));
  } catch {
    return 65534; // the kernel's default
  }
}

function everyUidMapped(): boolean {
  try {
    return /^\s*0\s+0\s+4294967295\s*$/.test(readFileSync("/proc/self/uid_map", "utf8"));
  } catch {
    return true; // no user namespaces in this kernel
  }
}

/** The indexes of this machine's interfaces that have the IPv6 address `bytes`. */
function ownInterfaces(bytes: Uint8Array): number[] {
  const same = (text: string) => addressBytes(text)?.every((b, i) => b === bytes[i]) === true;
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).filter((a) => a.family === "IPv6" && same(a.address)).map((a) => (a as { scopeid: number }).scopeid));
}

/**
 * Whether `text` is an address of this machine (loopback, or one of its
 * interfaces'): a peer there is one of its users, whose socket the kernel
 * must name, or no one to trust.
 */
export function thisMachine(text: string | undefined): boolean {
  const bytes = addressBytes(text);
  if (!bytes) return false;
  const v4 = v4Form(bytes);
  if (v4 ? v4[0] === 127 : bytes.every((b, i) => b === (i === 15 ? 1 : 0))) return true;
  const form = (b: Uint8Array) => (v4Form(b) ?? b).join(".");
  const own = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => addressBytes(a.address)));
  return own.some((b) => b !== undefined && form(b) === form(bytes));
}

/** An IPv4 address (or IPv4-mapped IPv6) as its 4 bytes. */
function v4Form(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length === 4) return bytes;
  const mapped = bytes.subarray(0, 12).every((b, i) => b === (i < 10 ? 0 : 0xff));
  return mapped ? bytes.subarray(12) : undefined;
}

/**
 * An address in text (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`) as 4 or 16
 * bytes; undefined if it is neither, or none (a peer reset before it was
 * accepted has no address left: Bun gives undefined).
 */
function addressBytes(text: string | undefined): Uint8Array | undefined {
  if (typeof text !== "string") return undefined;
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
 * The mode and owner the kernel judges a connect to the socket at `path`
 * by: its file's, while it is the file the agent bound, `bound` (its device
 * and inode; in a setgid directory its group is the directory's; an
 * operator's chmod, chgrp or chown counts); else (not bound yet, removed, or
 * replaced by another socket, which is not the agent's whatever its mode),
 * and for a client end (no path), `mode` and the agent's user and group, as
 * bound. Its directories' search permission is not looked at.
 */
export function socketAccess(path: string | undefined, mode: number, bound: { dev: number; ino: number } | undefined): [mode: number, owner: Owner] {
  const owner = agentOwner();
  if (path === undefined || bound === undefined) return [mode, owner];
  try {
    const file = lstatSync(path);
    if (file.dev === bound.dev && file.ino === bound.ino) return [file.mode & 0o777, { uid: file.uid, gid: file.gid }];
  } catch {
    // gone: as bound
  }
  return [mode, owner];
}

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
