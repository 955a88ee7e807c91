import { fileName, filePlacement, type FilePlacement } from "../io/file-placement.ts";
import type { SinkReport } from "./frame-sink.ts";

/**
 * The least time between two looks at a sink's file (ms): the sampler's
 * tick, once a second, takes the readings, and a scrape takes them many
 * times over; each look is one fstat and one stat, never on a write.
 */
export const SINK_LOOK_MS = 1000;

/**
 * Looks at the regular file a sink records into (open on `fd`) against the
 * sink's path: an operator's rm, a tmp cleaner, a rename aside or another
 * file put in its place leave the sink writing on into a file no one finds
 * there, which fills the disk unseen (a removed one until the agent exits).
 * The sink is not opened again (an Ogg stream cannot begin anew mid-way in
 * another file): what is found is told, once as it changes, at warn level
 * while the path does not lead to the file, at info once it does again.
 */
export class SinkFileWatch {
  private placement: FilePlacement = "in_place";
  private lookedAt = -Infinity;
  private ended = false;
  /**
   * The path looked at: a relative one under the working directory's name
   * when the file was opened (not normalised: "link/.." is left to the
   * kernel, as the open left it). Looked up relative to the directory
   * itself, it would still lead to the file once that directory is renamed,
   * where no one looking at the path given finds it any more.
   */
  private readonly at: string;

  constructor(
    private readonly path: string,
    private readonly fd: number,
    private readonly report: SinkReport | undefined,
  ) {
    this.at = path.startsWith("/") ? path : `${process.cwd()}/${path}`;
  }

  /** Where the file stands: looked at now if the last look is SINK_LOOK_MS old, as last found otherwise. */
  look(now = performance.now()): FilePlacement {
    if (this.ended || now - this.lookedAt < SINK_LOOK_MS) return this.placement;
    this.lookedAt = now;
    let found: FilePlacement;
    try {
      found = filePlacement(this.fd, this.at);
    } catch {
      // Cannot be told now (the path out of reach): as last found, until a look can tell.
      return this.placement;
    }
    if (found !== this.placement) this.tell(found);
    this.placement = found;
    return found;
  }

  /** A last look as the sink closes (however recent the one before), so a short run tells too; none after, the descriptor closing. */
  end(): void {
    if (this.ended) return;
    this.look(Infinity);
    this.ended = true;
  }

  private tell(found: FilePlacement): void {
    const sink = { sink: this.path };
    const goesOn = "what is recorded goes on into the file opened, which is no longer at that path";
    switch (found) {
      case "in_place":
        this.report?.("info", "the sink file is at its path again; the recording there goes on", sink);
        return;
      case "removed":
        this.report?.("warn", `the sink file was removed: ${goesOn} (its space is freed at exit)`, sink);
        return;
      case "moved":
        this.report?.("warn", `the sink file was moved away: no file is at its path now; ${goesOn}`, { ...sink, ...this.whereNow() });
        return;
      case "replaced":
        this.report?.("warn", `the sink file was replaced: the path leads to another file now; ${goesOn}`, { ...sink, ...this.whereNow() });
        return;
    }
  }

  /**
   * Where the file has a name now, as the kernel tells it: the name it was
   * opened by, wherever a rename took it. Nothing where that name itself is
   * gone (the file kept only by another hard link, renamed over) or cannot
   * be read, nor where it is the path looked at: the file is still there by
   * name, hidden by a file system mounted over its directory (or another
   * file bind-mounted over it), which no rename of it tells.
   */
  private whereNow(): { now_at?: string } {
    let name: string | undefined;
    try {
      name = fileName(this.fd);
    } catch {
      return {};
    }
    return name === undefined || name === this.at ? {} : { now_at: name };
  }
}
