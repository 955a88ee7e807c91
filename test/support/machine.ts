/**
 * What this machine lets a test do beyond the ordinary, for the tests that
 * need it to skip where it cannot be had (a container, a CI runner): IPv6 on
 * loopback, namespaces of its own, a disk slowed for one process or frozen, a process
 * held in the kernel, a pid chosen for a new process.
 */
import type { Subprocess } from "bun";
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmdirSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/** Whether ::1 can be bound: a container whose network has IPv6 disabled has no ::1. */
export const ipv6Loopback: boolean = (() => {
  try {
    Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } }).stop(true);
    return true;
  } catch {
    return false;
  }
})();

/**
 * Whether `unshare` makes the namespaces `options` ask for (`--mount`,
 * `--user`) here: root without CAP_SYS_ADMIN (a container's default) makes
 * no mount namespace, and a seccomp profile may refuse any.
 */
export function canUnshare(...options: string[]): boolean {
  return Bun.which("unshare") !== null && Bun.spawnSync(["unshare", ...options, "true"]).exitCode === 0;
}

/** A file system of a few KiB, seen by the processes run in it: see smallDisk. */
export interface SmallDisk {
  /** `cmd` run in the disk's mount namespace (nsenter), so that it sees the disk at its directory. */
  run: (cmd: string[]) => string[];
  /** The file `name` on the disk, as this process reaches it (through the holder's /proc/PID/root). */
  path: (name: string) => string;
  /** Takes the room left with the file `name`, as another writer filling the disk would; removing it gives it back. */
  fill: (name?: string) => void;
  /** Ends the namespace, and the disk with it. */
  release: () => Promise<void>;
}

/**
 * A tmpfs of `bytes` over `dir`, in a mount namespace of its own that a
 * sleeping process holds: `dir` stays as it was for everyone else, and the
 * disk goes when the holder does (a test that dies leaves no mount behind).
 * Needs what canUnshare("--mount") tells, and nsenter.
 */
export async function smallDisk(dir: string, bytes: number): Promise<SmallDisk> {
  const { holder, run, path } = await mountedAt(dir, 'mount -t tmpfs -o size="$1" tmpfs "$0"', String(bytes));
  return {
    run,
    path,
    fill: (name = "filler") => {
      const fd = openSync(path(name), "a");
      try {
        for (const block = new Uint8Array(4096); ; ) writeSync(fd, block);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
      } finally {
        closeSync(fd);
      }
    },
    release: async () => {
      holder.kill("SIGKILL");
      await holder.exited;
    },
  };
}

/**
 * `mount`, a shell command given `dir` as $0 and `arg` as $1, run in a mount
 * namespace of its own that a sleeping process (`holder`) keeps: what is
 * mounted goes when the holder does.
 */
async function mountedAt(dir: string, mount: string, arg: string) {
  const holder = Bun.spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c", `${mount} && echo mounted && exec sleep 3600`, dir, arg], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = holder.stdout.getReader();
  let said = "";
  while (!said.includes("mounted")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`nothing mounted at ${dir}: ${await new Response(holder.stderr).text()}`);
    said += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const root = `/proc/${holder.pid}/root`;
  return {
    holder,
    run: (cmd: string[]) => ["nsenter", "-t", String(holder.pid), "-m", "--", ...cmd],
    path: (name: string) => join(root, dir, name),
  };
}

/** A disk whose writes can be stopped and let go again: see freezableDisk. */
export interface FreezableDisk {
  /** `cmd` run in the disk's mount namespace (nsenter), so that it sees the disk at its directory. */
  run: (cmd: string[]) => string[];
  /** The file `name` on the disk, as this process reaches it. */
  path: (name: string) => string;
  /** Stops every write to the disk (fsfreeze): a writer waits in the kernel until thaw. */
  freeze: () => void;
  thaw: () => void;
  /** Thaws it, and ends the namespace, the disk and its image with it. */
  release: () => Promise<void>;
}

/**
 * An ext4 file system of 16 MiB in a loop-mounted image, over `dir` in a
 * mount namespace of its own (see smallDisk), that `freeze()` stops taking
 * writes as a disk stalled in its write does (tmpfs cannot be frozen). Needs
 * root, loop devices, mkfs.ext4 and fsfreeze: see canFreezeDisk.
 */
export async function freezableDisk(dir: string): Promise<FreezableDisk> {
  const image = join(mkdtempSync(join(tmpdir(), "audio-agent-disk-")), "disk.img");
  writeFileSync(image, "");
  truncateSync(image, 16 << 20);
  const made = Bun.spawnSync(["mkfs.ext4", "-q", "-F", image]);
  if (made.exitCode !== 0) throw new Error(`mkfs.ext4 ${image}: ${made.stderr.toString()}`);
  const { holder, run, path } = await mountedAt(dir, 'mount -o loop "$1" "$0"', image);
  const fsfreeze = (flag: string) => {
    const done = Bun.spawnSync(run(["fsfreeze", flag, dir]));
    if (done.exitCode !== 0) throw new Error(`fsfreeze ${flag} ${dir}: ${done.stderr.toString()}`);
  };
  let frozen = false;
  return {
    run,
    path,
    freeze: () => {
      fsfreeze("-f");
      frozen = true;
    },
    thaw: () => {
      if (frozen) fsfreeze("-u");
      frozen = false;
    },
    release: async () => {
      // A process held by the freeze could not end, nor the mount go.
      if (frozen) Bun.spawnSync(run(["fsfreeze", "-u", dir]));
      holder.kill("SIGKILL");
      await holder.exited;
      rmSync(dirname(image), { recursive: true, force: true });
    },
  };
}

/** Whether freezableDisk can be had here. */
export async function canFreezeDisk(): Promise<boolean> {
  if (!canUnshare("--mount") || !Bun.which("mkfs.ext4") || !Bun.which("fsfreeze") || !Bun.which("nsenter")) return false;
  const dir = mkdtempSync(join(tmpdir(), "audio-agent-freeze-"));
  try {
    const disk = await freezableDisk(dir);
    try {
      disk.freeze();
      disk.thaw();
      return true;
    } finally {
      await disk.release();
    }
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Where cgroup v1 mounts its blkio hierarchy (cgroup v2 has none). */
const BLKIO = "/sys/fs/cgroup/blkio";

/** The whole disk (major:minor) that holds `dir`; undefined where none does (a tmpfs). */
function diskOf(dir: string): string | undefined {
  const dev = statSync(dir).dev;
  const device = `${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
  const sys = `/sys/dev/block/${device}`;
  if (!existsSync(sys)) return undefined;
  // A partition's throttle is its disk's.
  return existsSync(join(sys, "partition")) ? readFileSync(join(sys, "..", "dev"), "utf8").trim() : device;
}

/**
 * Writes to the disk that holds `dir` slowed to `bytesPerSecond` for the
 * processes let in (`admit(pid)`), with a cgroup v1 blkio throttle: what such
 * a process writes lands in the page cache at once, but an fsync of it waits
 * for the disk at that pace (the syncing thread submits the writes itself).
 * Undefined where this machine cannot (no blkio hierarchy, not root, `dir`
 * on no disk). `release()` lets every process go and removes the cgroup.
 */
export function slowWrites(dir: string, bytesPerSecond: number): { admit: (pid: number) => void; release: () => void } | undefined {
  return throttled(dir, bytesPerSecond, "blkio.throttle.write_bps_device");
}

/**
 * Reads from the disk that holds `dir` slowed to `bytesPerSecond` for the
 * processes let in, as slowWrites does writes: only what is not in the page
 * cache is read from the disk (see dropCached).
 */
export function slowReads(dir: string, bytesPerSecond: number): { admit: (pid: number) => void; release: () => void } | undefined {
  return throttled(dir, bytesPerSecond, "blkio.throttle.read_bps_device");
}

/** The file `path` on a disk, written to it and dropped from the page cache: the next read of it comes from the disk (slowReads). */
export function dropCached(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  // GNU dd's nocache with no count drops the whole file's cached pages.
  const dropped = Bun.spawnSync(["dd", `if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  if (dropped.exitCode !== 0) throw new Error(`dd iflag=nocache ${path}: ${dropped.stderr.toString()}`);
}

/** A blkio cgroup whose `throttle` (a blkio.throttle.* file) slows the disk of `dir` to `bytesPerSecond`: see slowWrites. */
function throttled(dir: string, bytesPerSecond: number, throttle: string): { admit: (pid: number) => void; release: () => void } | undefined {
  const disk = existsSync(BLKIO) ? diskOf(dir) : undefined;
  if (disk === undefined) return undefined;
  const group = mkdtempSync(join(BLKIO, "audio-agent-test-"));
  try {
    writeFileSync(join(group, throttle), `${disk} ${bytesPerSecond}`);
  } catch {
    rmdirSync(group);
    return undefined;
  }
  return {
    admit: (pid) => writeFileSync(join(group, "cgroup.procs"), String(pid)),
    release: () => {
      for (const pid of readFileSync(join(group, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
        try {
          writeFileSync(join(BLKIO, "cgroup.procs"), pid);
        } catch {
          // gone meanwhile
        }
      }
      rmdirSync(group);
    },
  };
}

/** Whether slowWrites can slow the writes to `dir`'s disk here. */
export function canSlowWrites(dir: string): boolean {
  try {
    const slow = slowWrites(dir, 1 << 20);
    slow?.release();
    return slow !== undefined;
  } catch {
    return false;
  }
}

/** Where cgroup v1 mounts its freezer hierarchy (cgroup v2's freezer lets a KILL through). */
const FREEZER = "/sys/fs/cgroup/freezer";

/**
 * Processes held in the kernel, as one stuck on a dead device is: the ones
 * let in (`admit(pid)`) are frozen by a cgroup v1 freezer, and a signal sent
 * meanwhile, KILL too, waits until `release()` thaws them and removes the
 * cgroup. Undefined where this machine cannot (no freezer hierarchy, not root).
 */
export function freezer(): { admit: (pid: number) => void; freeze: () => Promise<void>; release: () => void } | undefined {
  if (!existsSync(FREEZER)) return undefined;
  let group: string;
  try {
    group = mkdtempSync(join(FREEZER, "audio-agent-test-"));
  } catch {
    return undefined;
  }
  const state = join(group, "freezer.state");
  return {
    admit: (pid) => writeFileSync(join(group, "cgroup.procs"), String(pid)),
    // FREEZING until every process is held.
    freeze: async () => {
      writeFileSync(state, "FROZEN");
      for (let i = 0; i < 500 && readFileSync(state, "utf8").trim() !== "FROZEN"; i++) await Bun.sleep(10);
      if (readFileSync(state, "utf8").trim() !== "FROZEN") throw new Error(`${group} did not freeze`);
    },
    release: () => {
      writeFileSync(state, "THAWED");
      for (const pid of readFileSync(join(group, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
        try {
          writeFileSync(join(FREEZER, "cgroup.procs"), pid);
        } catch {
          // gone meanwhile
        }
      }
      // A process killed while frozen leaves the group only once it has ended, a moment after the thaw.
      for (let i = 0; ; i++) {
        try {
          return rmdirSync(group);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EBUSY" || i >= 500) throw e;
          Bun.sleepSync(10);
        }
      }
    },
  };
}

/** Whether freezer can hold processes here. */
export const canFreeze: boolean = (() => {
  try {
    const held = freezer();
    held?.release();
    return held !== undefined;
  } catch {
    return false;
  }
})();

/** The pid the kernel gave last in this pid namespace: root writes it to choose the next one. */
const NS_LAST_PID = "/proc/sys/kernel/ns_last_pid";

/** Whether spawnAt can choose a new process's pid here (root in its pid namespace). */
export const canChoosePid: boolean = (() => {
  try {
    writeFileSync(NS_LAST_PID, readFileSync(NS_LAST_PID, "utf8"));
    return true;
  } catch {
    return false;
  }
})();

/**
 * `cmd` spawned as process `pid`, a pid no process has now (one that exited and was reaped), as the
 * kernel gives it again once its pids wrap around: the last pid given is set to the one before, and
 * tried again while another process takes it first. Undefined if it could not be had.
 */
export function spawnAt(pid: number, cmd: string[]): Subprocess | undefined {
  for (let i = 0; i < 100; i++) {
    writeFileSync(NS_LAST_PID, String(pid - 1));
    const proc = Bun.spawn(cmd, { stdout: "ignore", stderr: "ignore" });
    if (proc.pid === pid) return proc;
    proc.kill("SIGKILL");
  }
  return undefined;
}

/**
 * Runs Bun's `script` with `args` under a file size limit of `bytes`
 * (RLIMIT_FSIZE, by prlimit), SIGXFSZ ignored (kept across exec), so that a
 * write past the limit is cut short there and the next fails with EFBIG, as
 * on a full disk, instead of killing the process.
 */
export function withFileSizeLimit(bytes: number, script: string, ...args: string[]) {
  return Bun.spawnSync(["sh", "-c", `trap '' XFSZ; exec prlimit --fsize=${bytes} "$0" "$@"`, process.execPath, script, ...args], { stderr: "pipe" });
}
