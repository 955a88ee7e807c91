/**
 * Bun.connect with a peer's action timed to the client's connect: `before`
 * runs as each connect begins (a server's bytes or end then wait in the
 * kernel, ahead of the new connection's open in the client's next turn),
 * `made` once the connection is made (its bytes may already be coming);
 * with `slowMs`, each connect resolves that much later, as on a busy loop.
 * The real connect is made every time; undone after the test.
 */
export function hookConnects(defer: (cleanup: () => unknown) => void, hooks: { before?: () => void; made?: () => void } = {}, slowMs = 0): void {
  const real = Bun.connect;
  Bun.connect = (async (options: Parameters<typeof Bun.connect>[0]) => {
    hooks.before?.();
    const socket = await real(options);
    hooks.made?.();
    if (slowMs > 0) await Bun.sleep(slowMs);
    return socket;
  }) as unknown as typeof Bun.connect;
  defer(() => void (Bun.connect = real));
}
