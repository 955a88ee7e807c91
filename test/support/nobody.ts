/** Running a command as another user: nobody (uid/gid 65534, no groups) via setpriv (util-linux), which needs root. */
import { join } from "node:path";
import { BUN, copyOfBun } from "./processes.ts";

export const NOBODY = 65534;
const setpriv = Bun.which("setpriv");
/** Whether this process can run commands as nobody (root, and setpriv installed). */
export const canSwitchUser = process.getuid?.() === 0 && setpriv !== null;

/**
 * `command` run as nobody. Its program must be executable by nobody: when
 * the repository's Bun is not (a home directory of mode 0700, say), a copy in
 * `dir` (which nobody must be able to enter) is used.
 */
export function asNobody(dir: string, command: string[]): string[] {
  return asUser(NOBODY, NOBODY, dir, command);
}

/**
 * `command` run as `uid` and `gid` with no other groups (see asNobody), or
 * with `login`, the groups a login gives that user (initgroups: /etc/group).
 */
export function asUser(uid: number, gid: number, dir: string, command: string[], login = false): string[] {
  const prefix = [setpriv!, `--reuid=${uid}`, `--regid=${gid}`, login ? "--init-groups" : "--clear-groups", "--"];
  const probe = Bun.spawnSync([...prefix, command[0]!, "--version"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (probe.exitCode !== 0 && command[0] === BUN) {
    return [...prefix, copyOfBun(join(dir, "bun")), ...command.slice(1)];
  }
  return [...prefix, ...command];
}
