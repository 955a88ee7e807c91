import { describe, expect, test } from "bun:test";
import { PassingShortage } from "../../src/io/passing-errno.ts";

describe("PassingShortage: an open's errno that tells of this moment, not of the path", () => {
  test("EMFILE, ENFILE, EINTR and EAGAIN pass; any other errno, or none, does not", () => {
    for (const code of ["EMFILE", "ENFILE", "EINTR", "EAGAIN"]) expect(new PassingShortage(() => {}).met(code)).toBe(true);
    for (const code of ["ENOENT", "EACCES", "ENXIO", undefined]) expect(new PassingShortage(() => {}).met(code)).toBe(false);
  });

  test("a shortage is told once however many tries meet it, and anew only after a try that did not", () => {
    const told: string[] = [];
    const shortage = new PassingShortage((code) => told.push(code));
    expect(shortage.on).toBe(false);
    expect(shortage.met("EMFILE")).toBe(true);
    expect(shortage.met("EMFILE")).toBe(true);
    expect(shortage.met("ENFILE")).toBe(true);
    expect(shortage.on).toBe(true);
    expect(told).toEqual(["EMFILE"]);
    // Another errno is no shortage, and does not end the one told either.
    expect(shortage.met("ENOENT")).toBe(false);
    expect(shortage.on).toBe(true);
    shortage.over();
    expect(shortage.on).toBe(false);
    expect(shortage.met("EAGAIN")).toBe(true);
    expect(told).toEqual(["EMFILE", "EAGAIN"]);
  });
});
