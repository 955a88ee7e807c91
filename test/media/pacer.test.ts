import { describe, expect, test } from "bun:test";
import { Pacer } from "../../src/media/pacer.ts";

/** A clock the test moves by hand; a wait advances it by the delay asked, plus `overshootMs` as a timer may. */
function fakeClock(start = 1000, overshootMs = 0) {
  const clock = {
    t: start,
    now: () => clock.t,
    sleeps: [] as number[],
    /** Sends the frame at `timeMs` as the pump does: after waiting the delay the pacer gives, if any. */
    send: (pacer: Pacer, timeMs: number, durationMs?: number) => {
      const ms = pacer.delayFor(timeMs, durationMs);
      if (ms <= 0) return;
      clock.sleeps.push(ms);
      clock.t += ms + overshootMs;
    },
  };
  return clock;
}

describe("Pacer", () => {
  test("the first frame goes at once; later ones wait for their offset from it", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    expect(pacer.delayFor(500)).toBe(0); // any starting timestamp anchors the schedule
    expect(pacer.delayFor(520)).toBe(20);
    c.t += 15;
    expect(pacer.delayFor(540)).toBe(25);
    expect(pacer.reanchors).toBe(0);
  });

  test("schedules against the start, so oversleeping does not accumulate over a long file", () => {
    // every sleep overshoots by 3 ms, as timers do
    const c = fakeClock(1000, 3);
    const pacer = new Pacer({ now: c.now });
    const start = c.t;
    for (let i = 0; i <= 3000; i++) c.send(pacer, i * 20); // 60 s of 20 ms frames
    // frame-to-frame sleeps would be 3000 x 3 ms = 9 s late; this is one overshoot late
    expect(c.t - start).toBe(60_000 + 3);
    expect(pacer.reanchors).toBe(0);
  });

  test("a frame with the same time as the one before is due once that one has played: its duration, else the step before", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    expect(pacer.delayFor(0)).toBe(0);
    expect(pacer.delayFor(20)).toBe(20);
    expect(pacer.delayFor(20)).toBe(40);
    expect(pacer.reanchors).toBe(0); // the schedule stays: the stamps after it keep their times
    const timed = new Pacer({ now: c.now });
    for (const t of [0, 20, 20]) c.send(timed, t, 60);
    expect(c.sleeps.slice(-2)).toEqual([20, 60]);
    // Without durations, a run stamped alike goes on at the step before it, not at 20 ms.
    const stepped = new Pacer({ now: c.now });
    for (const t of [0, 30, 30, 30]) c.send(stepped, t);
    expect(c.sleeps.slice(-3)).toEqual([30, 30, 30]);
  });

  test("wire timestamps that never advance (a capture stamped 0 throughout) are paced by each frame's duration, or 20 ms where none is known, not sent as fast as read", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    const start = c.t;
    for (let i = 0; i < 50; i++) c.send(pacer, 0, 40);
    expect(c.t - start).toBe(49 * 40);
    const unknown = new Pacer({ now: c.now });
    const from = c.t;
    for (let i = 0; i < 50; i++) c.send(unknown, 0);
    expect(c.t - from).toBe(49 * 20);
  });

  test("frames stamped alike in an advancing capture (a sender that stamps the frames of one read with one time) keep the stamps' pace: each is due once the one before has played, not that much later than the stamps after it", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    const start = c.t;
    // 20 ms frames, two to a stamp: 0, 0, 40, 40, 80, 80, ...
    for (let i = 0; i < 300; i++) c.send(pacer, Math.floor(i / 2) * 40, 20);
    expect(c.t - start).toBe(299 * 20);
    expect(c.sleeps.every((ms) => ms === 20)).toBe(true);
  });

  test("late frames go at once; a small lag is made up, not carried", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    pacer.delayFor(0);
    c.t += 150; // 150 ms stall: under the 200 ms limit
    expect(pacer.delayFor(20)).toBe(0);
    expect(pacer.delayFor(40)).toBe(0);
    expect(pacer.delayFor(160)).toBe(10); // back on the original schedule
    expect(pacer.reanchors).toBe(0);
  });

  test("more than 200 ms behind, it re-anchors instead of bursting to catch up", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    pacer.delayFor(0);
    c.t += 1000; // the process was suspended for a second
    expect(pacer.delayFor(20)).toBe(0);
    expect(pacer.reanchors).toBe(1);
    // the lag is dropped: the next frame is due one frame after the late one
    expect(pacer.delayFor(40)).toBe(20);
    expect(pacer.delayFor(60)).toBe(40);
    expect(pacer.reanchors).toBe(1);
  });

  test("exactly 200 ms behind is within the limit: no re-anchoring, the schedule holds", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    pacer.delayFor(0);
    c.t += 220; // the frame at 20 is due at 20: 200 ms late
    expect(pacer.delayFor(20)).toBe(0);
    expect(pacer.reanchors).toBe(0);
    // still on the original schedule: the frame at 230 is due 10 ms from now
    expect(pacer.delayFor(230)).toBe(10);
  });

  test("the lateness limit is configurable", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now, maxLateMs: 50 });
    pacer.delayFor(0);
    c.t += 70;
    pacer.delayFor(10);
    expect(pacer.reanchors).toBe(1);
  });

  test("a timeline that jumps back (--loop) re-anchors one frame step after the last frame", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    for (const t of [0, 20, 40, 60]) c.send(pacer, t);
    expect(c.sleeps).toEqual([20, 20, 20]);
    c.send(pacer, 0); // loop restarts at 0
    c.send(pacer, 20);
    expect(c.sleeps).toEqual([20, 20, 20, 20, 20]);
    expect(pacer.reanchors).toBe(1);
  });

  test("a --loop restart after a last frame longer than the step before it (a chain ending in a 120 ms packet) waits until that frame has played", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    for (const t of [0, 20, 40]) c.send(pacer, t, 20);
    c.send(pacer, 60, 120);
    expect(c.sleeps).toEqual([20, 20, 20]);
    c.send(pacer, 0, 20); // the next pass, due 120 ms after the last frame went
    expect(c.sleeps).toEqual([20, 20, 20, 120]);
    expect(pacer.reanchors).toBe(1);
  });

  test("a jump back in wire timestamps does not stall for the difference", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    const unixMs = 1_700_000_000_000;
    pacer.delayFor(unixMs);
    c.t += 20;
    expect(pacer.delayFor(unixMs + 20)).toBe(0);
    expect(pacer.delayFor(unixMs - 60_000)).toBe(20); // one step after the last, not a minute
    expect(pacer.reanchors).toBe(1);
  });

  test("a jump forward in wire timestamps (a clock stepped where they were stamped: NTP's first sync on a board that booted in 1970) does not stall for the difference", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    for (const t of [10_000, 10_020, 10_040]) c.send(pacer, t);
    c.send(pacer, 1_796_000_000_000); // one step after the last, not 56 years
    c.send(pacer, 1_796_000_000_020);
    expect(c.sleeps).toEqual([20, 20, 20, 20]);
    expect(pacer.reanchors).toBe(1);
  });

  test("a gap in the timeline up to 1 s (frames dropped where it was recorded) is kept; a longer one goes on one step after the last frame", () => {
    const c = fakeClock();
    const pacer = new Pacer({ now: c.now });
    for (const t of [0, 20, 1020, 1040]) c.send(pacer, t);
    expect(c.sleeps).toEqual([20, 1000, 20]);
    expect(pacer.reanchors).toBe(0);
    c.send(pacer, 2041, 20); // 1001 ms on
    c.send(pacer, 2061, 20);
    expect(c.sleeps).toEqual([20, 1000, 20, 20, 20]);
    expect(pacer.reanchors).toBe(1);
  });
});
