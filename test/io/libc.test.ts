import { describe, expect, test } from "bun:test";
import { AF_UNIX, openLibc, unixAddress } from "../../src/io/libc.ts";

const GETPID = { getpid: { args: [], returns: "i32" } } as const;

describe("unixAddress: a struct sockaddr_un as long as the address it holds", () => {
  test("a path: the family (little-endian AF_UNIX), the path and its NUL", () => {
    expect([...unixAddress("/tmp/a.sock")]).toEqual([AF_UNIX, 0, ...Buffer.from("/tmp/a.sock"), 0]);
  });

  test("an abstract name (@name): the family, a NUL, then the name with no NUL after", () => {
    expect([...unixAddress("@audio")]).toEqual([AF_UNIX, 0, 0, ...Buffer.from("audio")]);
  });
});

describe("openLibc: the first candidate that opens", () => {
  test("past those that do not, to the one that does, whose name it gives", () => {
    const opened = openLibc(GETPID, ["/nonexistent/libc.so.9", "libc.so.6"]);
    expect(opened.detail).toBe("libc.so.6");
    expect(opened.library!.symbols.getpid()).toBe(process.pid);
    opened.library!.close();
  });

  test("none opens: a null library and why, each candidate named with its failure", () => {
    const opened = openLibc(GETPID, ["/nonexistent/a.so", "/nonexistent/b.so"]);
    expect(opened.library).toBeNull();
    expect(opened.detail).toMatch(/^no libc could be loaded \(\/nonexistent\/a\.so: .+; \/nonexistent\/b\.so: .+\)$/);
  });
});
