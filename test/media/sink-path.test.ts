/**
 * A sink file opened in a sticky directory others may write (as /tmp):
 * another user's symbolic link, at the path or on the way to it, is refused;
 * a link of ours is followed, as the kernel follows it; the file is cut to
 * what is written unless appended to. Real files, links and owners: the
 * tests that make another user's link or file need root (lchown, chown).
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, closeSync, lchownSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { openForWriting, UnsafeSinkError } from "../../src/media/sink-path.ts";
import { useCleanup } from "../support/cleanup.ts";
import { NOBODY } from "../support/nobody.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();
const asRoot = process.getuid?.() === 0;
if (!asRoot) console.warn("sink path tests with another user's link or file skipped: they need root");

/** A temp dir holding `shared` (mode 1777, as /tmp) and `precious`, a file of ours outside it. */
function stickyDir() {
  const t = socketDir(defer, "aa-sp-");
  const shared = t.path("shared");
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  const precious = t.path("precious");
  writeFileSync(precious, "precious\n");
  return { ...t, shared, precious };
}

/** Opens `path` as a sink does and writes `text` into it. */
function writeThrough(path: string, append: boolean, text: string): void {
  const fd = openForWriting(path, append);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** What openForWriting threw, as "UnsafeSinkError: message" (or the other error's name), or "opened". */
function refusal(path: string): string {
  try {
    closeSync(openForWriting(path, false));
    return "opened";
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
}

describe("openForWriting in a sticky directory others may write", () => {
  test("a file of ours there is cut to what is written, or added to with append", () => {
    const t = stickyDir();
    const sink = `${t.shared}/rec.wire`;
    writeFileSync(sink, "a longer recording from before\n");
    writeThrough(sink, false, "new\n");
    expect(readFileSync(sink, "utf8")).toBe("new\n");
    writeThrough(sink, true, "more\n");
    expect(readFileSync(sink, "utf8")).toBe("new\nmore\n");
  });

  test.skipIf(!asRoot)("another user's symbolic link at the path is refused, naming it: the file it points at is left as it was", () => {
    const t = stickyDir();
    const sink = `${t.shared}/rec.wire`;
    symlinkSync(t.precious, sink);
    lchownSync(sink, NOBODY, NOBODY);
    expect(refusal(sink)).toBe(
      `UnsafeSinkError: sink ${sink} is a symbolic link of another user (uid ${NOBODY}) in the world-writable directory ${t.shared}; refusing to write through it`,
    );
    expect(readFileSync(t.precious, "utf8")).toBe("precious\n");
  });

  test.skipIf(!asRoot)("another user's symbolic link on the way (a directory of the path) is refused: the file it leads to is left as it was", () => {
    const t = stickyDir();
    // Their link rec -> a directory of ours, where rec.wire is the file they want written over.
    const theirs = t.path("theirs");
    mkdirSync(theirs);
    writeFileSync(`${theirs}/rec.wire`, "precious\n");
    symlinkSync(theirs, `${t.shared}/rec`);
    lchownSync(`${t.shared}/rec`, NOBODY, NOBODY);
    const sink = `${t.shared}/rec/rec.wire`;
    expect(refusal(sink)).toStartWith(`UnsafeSinkError: sink ${sink} is reached through ${t.shared}/rec, a symbolic link of another user (uid ${NOBODY})`);
    expect(readFileSync(`${theirs}/rec.wire`, "utf8")).toBe("precious\n");
  });

  test.skipIf(!asRoot)("a symbolic link of ours there to another user's file elsewhere, in no sticky directory, is followed as the kernel follows it: written", () => {
    const t = stickyDir();
    chownSync(t.precious, NOBODY, NOBODY);
    const sink = `${t.shared}/rec.wire`;
    symlinkSync(t.precious, sink);
    writeThrough(sink, false, "audio\n");
    expect(readFileSync(t.precious, "utf8")).toBe("audio\n");
  });
});
