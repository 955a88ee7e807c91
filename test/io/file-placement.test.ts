import { describe, expect, test } from "bun:test";
import { closeSync, mkdirSync, openSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { filePlacement } from "../../src/io/file-placement.ts";
import { useCleanup } from "../support/cleanup.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** A file opened for writing at `path` in a fresh directory, closed after the test. */
function opened(name = "rec.wire") {
  const t = socketDir(defer, "fp-");
  const path = t.path(name);
  const fd = openSync(path, "w");
  defer(() => closeSync(fd));
  return { ...t, file: path, fd };
}

describe("filePlacement: where a file open for writing stands against its path", () => {
  test("at its path; through a symbolic link to it too", () => {
    const t = opened();
    expect(filePlacement(t.fd, t.file)).toBe("in_place");
    symlinkSync(t.file, t.path("link"));
    expect(filePlacement(t.fd, t.path("link"))).toBe("in_place");
  });

  test("removed (no name left), also when another file is put at the path since, or its directory is removed", () => {
    const t = opened();
    unlinkSync(t.file);
    expect(filePlacement(t.fd, t.file)).toBe("removed");
    writeFileSync(t.file, "another");
    expect(filePlacement(t.fd, t.file)).toBe("removed");
    const d = opened();
    rmSync(d.dir, { recursive: true });
    expect(filePlacement(d.fd, d.file)).toBe("removed");
  });

  test("moved away: renamed aside, or its directory renamed; back in place once renamed back", () => {
    const t = opened();
    renameSync(t.file, t.path("aside"));
    expect(filePlacement(t.fd, t.file)).toBe("moved");
    renameSync(t.path("aside"), t.file);
    expect(filePlacement(t.fd, t.file)).toBe("in_place");
    const sub = t.path("sub");
    mkdirSync(sub);
    const fd = openSync(`${sub}/rec`, "w");
    defer(() => closeSync(fd));
    renameSync(sub, t.path("sub2"));
    expect(filePlacement(fd, `${sub}/rec`)).toBe("moved");
    // Nothing there either: a file where its directory was (ENOTDIR), a loop of symbolic links at its path (ELOOP).
    writeFileSync(sub, "");
    expect(filePlacement(fd, `${sub}/rec`)).toBe("moved");
    renameSync(t.file, t.path("aside"));
    symlinkSync(t.file, t.file);
    expect(filePlacement(t.fd, t.file)).toBe("moved");
  });

  test("replaced: another file at the path while it has a name elsewhere", () => {
    const t = opened();
    renameSync(t.file, t.path("aside"));
    writeFileSync(t.file, "another");
    expect(filePlacement(t.fd, t.file)).toBe("replaced");
    // Renamed back over the other one: in place again.
    renameSync(t.path("aside"), t.file);
    expect(filePlacement(t.fd, t.file)).toBe("in_place");
  });
});
