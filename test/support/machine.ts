/**
 * What this machine lets a test do beyond the ordinary, for the tests that
 * need it to skip where it cannot be had (a container, a CI runner): IPv6 on
 * loopback, namespaces of its own.
 */

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
