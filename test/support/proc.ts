/**
 * What Linux reports under /proc: the resident memory and open files of a
 * process, the bytes this one has read, its main thread's wake-ups, whether it lives, the processes that name a directory or
 * share a session, the TCP
 * sockets listening on a port, the Unix sockets listening at a path (and
 * those accepted there), and the
 * socket buffer sizes it grants.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { constants } from "node:os";
import { statusKiB } from "../../src/bench/process-figures.ts";

/** VmRSS of a process in KiB, 0 when it is gone (the bench's own reader). */
export function rssKiB(pid: number): number {
  return statusKiB(pid, "VmRSS");
}

/** The bytes this process has read so far (rchar: by every read, those the page cache answered too). */
export function bytesReadHere(): number {
  return Number(/^rchar:\s+(\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"))![1]);
}

/** Voluntary context switches of `pid`'s main thread: each is a wake-up after the thread slept. */
export function wakeUps(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, "utf8"))![1]);
}

/** The wake-ups of `pid`'s main thread while `ms` pass: what its timers cost a process left idle. */
export async function wakeUpsOver(pid: number, ms: number): Promise<number> {
  const before = wakeUps(pid);
  await Bun.sleep(ms);
  return wakeUps(pid) - before;
}

/**
 * The peak resident memory of `pid` (KiB, 0 if never seen alive): its VmHWM,
 * the kernel's own high-water mark, read every `everyMs` until `until`
 * settles, so one look while it lives is enough, however late the first.
 * Not getrusage's maxrss (Bun's resourceUsage): the kernel keeps the peak of
 * the memory a child had before its exec, and a child forked from a test
 * process holding 370 MiB counted those.
 */
export async function peakRss(pid: number, until: Promise<unknown>, everyMs = 10): Promise<number> {
  let peak = 0;
  let settled = false;
  until.finally(() => (settled = true)).catch(() => {});
  while (!settled) {
    peak = Math.max(peak, statusKiB(pid, "VmHWM"));
    await Bun.sleep(everyMs);
  }
  return peak;
}

/**
 * Whether `signal` sent to process `pid` still waits in the kernel (ShdPnd):
 * a process held off the CPU takes it only when it runs again, and the same
 * signal sent meanwhile is merged into it (Linux keeps one of each pending).
 * False once the process is gone.
 */
export function signalPending(pid: number, signal: NodeJS.Signals): boolean {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return false;
  }
  const pending = BigInt(`0x${/^ShdPnd:\s+([0-9a-f]+)$/m.exec(status)![1]}`);
  return ((pending >> BigInt(constants.signals[signal] - 1)) & 1n) === 1n;
}

/** Live and not a zombie (nothing may reap the daemon's orphans in a container). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Live processes whose command line names `dir` (agents, and wrapper shells not yet exec'd), but not this one. */
export function runningIn(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir) && alive(pid)) pids.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** When process `pid` started (clock ticks after boot, /proc/PID/stat's field 22), as the init script reads it. */
export function startTimeOf(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[19]!;
}

/** The session process `pid` belongs to (/proc/PID/stat's sixth field); undefined once it is gone. */
export function sessionOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[3]);
  } catch {
    return undefined;
  }
}

/** The live processes of session `sid`. */
export function inSession(sid: number): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => sessionOf(pid) === sid && alive(pid));
}

/** The live children of process `pid`, each with its command name (/proc/PID/stat's second field). */
export function childrenOf(pid: number): { pid: number; comm: string }[] {
  const children: { pid: number; comm: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const [state, ppid] = stat.slice(close + 2).split(" ");
      if (Number(ppid) === pid && state !== "Z" && state !== "X") children.push({ pid: Number(entry), comm: stat.slice(stat.indexOf("(") + 1, close) });
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What the open file descriptors of a process refer to (paths, "socket:[...]", "pipe:[...]"). */
export function openFiles(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Addresses of the TCP sockets listening on `port`, from /proc/net/tcp then
 * /proc/net/tcp6, in the kernel's hex ("0100007F" is 127.0.0.1).
 */
export function listeners(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const found: string[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const [address, p] = cols[1]!.split(":");
      if (p === hexPort && cols[3] === "0A") found.push(address!); // 0A: LISTEN
    }
  }
  return found;
}

/** How many Unix sockets listen at `path` (bound by that name), from /proc/net/unix. */
export function unixListeners(path: string): number {
  return unixSocketsAt(path, true);
}

/**
 * The connections a server listening at `path` has accepted and not closed
 * yet (its ends of them: the kernel names each by the listener's name; a
 * client's end has none).
 */
export function unixAccepted(path: string): number {
  return unixSocketsAt(path, false);
}

/** The sockets at `path` (or the hidden name it was bound by) that listen, or that do not. */
function unixSocketsAt(path: string, listening: boolean): number {
  const SO_ACCEPTCON = 0x10000;
  // The agent binds a hidden name beside the path (".NAME.xxxxxxxx") and links it into place:
  // the table lists the name it was bound by.
  const slash = path.lastIndexOf("/");
  const hidden = `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.`;
  return readFileSync("/proc/net/unix", "utf8")
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((cols) => {
      if (cols.length < 8 || ((parseInt(cols[3]!, 16) & SO_ACCEPTCON) !== 0) !== listening) return false;
      const name = cols.slice(7).join(" ");
      return name === path || (name.startsWith(hidden) && !name.slice(hidden.length).includes("/"));
    }).length;
}

/**
 * What getsockopt reports after setsockopt(requested): Linux clamps the
 * request to net.core.{w,r}mem_max and doubles it for bookkeeping.
 */
export function kernelBufferBytes(requested: number, which: "send" | "receive" = "send"): number {
  const max = Number(readFileSync(`/proc/sys/net/core/${which === "send" ? "wmem_max" : "rmem_max"}`, "utf8"));
  return 2 * Math.min(requested, max);
}

/**
 * Leaves `pid` out of file descriptors for a while, as a peer holding every
 * one would: its soft RLIMIT_NOFILE is lowered (prlimit) below its lowest free
 * descriptor, so each open it makes fails with EMFILE while what it holds
 * goes on working. Returns the function that gives its limit back.
 */
export function outOfDescriptors(pid: number): () => void {
  const [soft, hard] = Bun.spawnSync(["prlimit", "--pid", String(pid), "--nofile", "--raw", "--noheadings", "--output", "SOFT,HARD"]).stdout.toString().trim().split(/\s+/);
  const held = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let lowestFree = 0;
  while (held.has(lowestFree)) lowestFree++;
  const set = (limit: string) => {
    const result = Bun.spawnSync(["prlimit", "--pid", String(pid), `--nofile=${limit}:${hard}`], { stderr: "pipe" });
    // A process gone meanwhile has no limit to give back: what it said as it ended is the test's to read.
    if (result.exitCode !== 0 && alive(pid)) throw new Error(`prlimit --pid ${pid} --nofile=${limit}:${hard}: ${result.stderr}`);
  };
  set(String(lowestFree));
  return () => set(soft!);
}

/** Whether `pid` is blocked opening a FIFO that has no process at its other end yet (the kernel's wait_for_partner). */
export function openingFifo(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/wchan`, "latin1") === "wait_for_partner";
  } catch {
    return false; // gone
  }
}

/** fsync(2) and fdatasync(2) by their numbers on this machine's processor. */
const SYNC_CALLS: Record<string, string[]> = { x64: ["74", "75"], arm64: ["82", "83"] };
/** write(2) and pwrite64(2) by their numbers on this machine's processor. */
const WRITE_CALLS: Record<string, string[]> = { x64: ["1", "18"], arm64: ["64", "68"] };

/** A thread of `pid` inside fsync or fdatasync now (its id: `pid` itself is the main thread's, the event loop's); undefined if none is. */
export function threadInSync(pid: number): number | undefined {
  return threadIn(pid, SYNC_CALLS);
}

/** A thread of `pid` inside write or pwrite now (as threadInSync). */
export function threadInWrite(pid: number): number | undefined {
  return threadIn(pid, WRITE_CALLS);
}

/** A thread of `pid` inside one of the system calls `byArch` numbers for this processor now. */
function threadIn(pid: number, byArch: Record<string, string[]>): number | undefined {
  const calls = byArch[process.arch] ?? [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined; // gone
  }
  for (const tid of tasks) {
    try {
      if (calls.includes(readFileSync(`/proc/${pid}/task/${tid}/syscall`, "utf8").split(" ")[0]!)) return Number(tid);
    } catch {
      // ended meanwhile
    }
  }
  return undefined;
}
