/**
 * The mutation run: `npm run mutants [-- options]`. Not part of `npm test`.
 *
 * Puts small deliberate bugs into a copy of the repository's src/, one at a
 * time, and runs the unit tests of the mutated file's folder against each
 * (test/FOLDER/, or where a folder's tests live elsewhere too or take
 * minutes, the files TESTS names): a mutant the tests fail on is killed,
 * one they pass with survived (a missing test, or dead code). Prints the
 * score per folder and every survivor. A "folder" may be one file:
 * src/config.ts, tested by test/config.test.ts.
 *
 * Mutants come from two places: a curated list (test/long/curated-mutants.ts:
 * bugs that once went unnoticed, each kept so it stays caught) and mutants
 * generated from the source by simple operators (comparisons, equality,
 * boolean connectives and literals, off-by-one, min/max, dropped calls),
 * sampled per file from the seed and the file's name. Not run and not
 * counted: a mutant that no longer parses, one that compiles to the same
 * JavaScript (it changed only types), and one on the reviewed list of
 * equivalent mutants (each with the reason it cannot change behaviour, in
 * curated-mutants.ts).
 *
 *   --only protocol,transport   folders (default: protocol, io, transport, channels, media, observe,
 *                               roles, cli, config)
 *   --files pump.ts,monitor/hub.ts  only these files of the folders (paths below src/FOLDER/,
 *                               or the whole path); curated mutants in them too
 *   --max-per-file N            generated mutants per file (default 10; 0: curated only)
 *   --seed N                    sampling seed (default 1)
 *   --jobs N                    mutants run in parallel, each in its own copy (default 2)
 *   --list                      print the mutants without running them
 *   --tests                     print the test files each folder's mutants run against
 */
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { CURATED, EQUIVALENT, reviewedLines, type CuratedMutant } from "./curated-mutants.ts";
import { Rng } from "./rng.ts";

const ROOT = resolve(import.meta.dir, "../..");
/** src/FOLDER/ (or the one file src/FOLDER.ts, as config), tested by test/FOLDER/ (or test/FOLDER.test.ts). */
const FOLDERS = ["protocol", "io", "transport", "channels", "media", "observe", "roles", "cli", "config"] as const;
type Folder = (typeof FOLDERS)[number];
/** A mutant's tests may take this many times the unmutated run (a hang counts as killed). */
const TIMEOUT_FACTOR = 4;
/**
 * Each test process, and each agent it starts, may hold this much data
 * (RLIMIT_DATA, by util-linux's prlimit where it is there): a mutant that makes
 * a loop endless as it allocates ends out of memory, killed, in seconds, not
 * after filling the machine's memory until its test's time limit.
 */
const MAX_DATA_BYTES = 4 * 1024 ** 3;
const DATA_LIMIT = Bun.which("prlimit") ? ["prlimit", `--data=${MAX_DATA_BYTES}`, "--"] : [];

interface Mutant {
  id: string;
  folder: Folder;
  /** Path relative to the repository root. */
  file: string;
  line: number;
  operator: string;
  before: string;
  after: string;
  curated?: CuratedMutant;
  /** Why it is not run: it does not parse, changes only types, or was reviewed as equivalent. */
  skip?: string;
}

type Outcome = "killed" | "survived" | "timeout";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    only: { type: "string" },
    files: { type: "string" },
    "max-per-file": { type: "string", default: "10" },
    seed: { type: "string", default: "1" },
    jobs: { type: "string", default: "2" },
    list: { type: "boolean", default: false },
    tests: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(readFileSync(import.meta.path, "utf8").split("*/")[0]);
  process.exit(0);
}
const folders = (values.only ? values.only.split(",").map((s) => s.trim()) : [...FOLDERS]) as Folder[];
for (const f of folders) {
  if (!FOLDERS.includes(f)) {
    console.error(`--only: unknown folder "${f}"; allowed: ${FOLDERS.join(", ")}`);
    process.exit(2);
  }
}
const maxPerFile = Number(values["max-per-file"]);
const fileNames = values.files?.split(",").map((s) => s.trim()).filter((s) => s !== "");
// Naming nothing would keep no file and run an empty sample as if it were the rest of a run.
if (fileNames?.length === 0) {
  console.error(`--files: "${values.files}" names no file; give source files of the folders run, comma-separated (pump.ts,monitor/hub.ts)`);
  process.exit(2);
}
/** Whether `name`, as --files gives it (a path below the folder, or the whole path), names `file` (a path from the repository root). */
function names(name: string, file: string): boolean {
  return file === name || file.endsWith(`/${name}`);
}
/** Whether --files leaves `file` in the run. */
function chosen(file: string): boolean {
  return fileNames === undefined || fileNames.some((name) => names(name, file));
}
const jobs = Math.max(1, Number(values.jobs));
const seed = Number(values.seed);

/** Operators over one line of code: each yields the mutated line, or nothing where it does not apply. */
const OPERATORS: { name: string; pattern: RegExp; replace: (match: string) => string }[] = [
  { name: "=== to !==", pattern: / === /g, replace: () => " !== " },
  { name: "!== to ===", pattern: / !== /g, replace: () => " === " },
  { name: "< to <=", pattern: / < /g, replace: () => " <= " },
  { name: "<= to <", pattern: / <= /g, replace: () => " < " },
  { name: "> to >=", pattern: / > /g, replace: () => " >= " },
  { name: ">= to >", pattern: / >= /g, replace: () => " > " },
  { name: "&& to ||", pattern: / && /g, replace: () => " || " },
  { name: "|| to &&", pattern: / \|\| /g, replace: () => " && " },
  { name: "true to false", pattern: /\btrue\b/g, replace: () => "false" },
  { name: "false to true", pattern: /\bfalse\b/g, replace: () => "true" },
  { name: "+ 1 to - 1", pattern: / \+ 1\b/g, replace: () => " - 1" },
  { name: "- 1 to + 1", pattern: / - 1\b/g, replace: () => " + 1" },
  { name: "min to max", pattern: /Math\.min\(/g, replace: () => "Math.max(" },
  { name: "max to min", pattern: /Math\.max\(/g, replace: () => "Math.min(" },
  { name: "++ to --", pattern: /\+\+/g, replace: () => "--" },
];

/** `if (cond)` -> `if (!(cond))`, when the condition closes on the same line. */
function negateIf(line: string, code: string): string | undefined {
  const at = code.search(/\bif \(/);
  if (at < 0) return undefined;
  const open = at + 3;
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === "(") depth++;
    else if (code[i] === ")" && --depth === 0) {
      return `${line.slice(0, open + 1)}!(${line.slice(open + 1, i)})${line.slice(i)}`;
    }
  }
  return undefined;
}

/** A statement that is one call, e.g. `this.wake();`: dropping it is a mutant of its own. */
const CALL_STATEMENT = /^(\s*)(?:this\.|await )?[\w.]+\([^;]*\);\s*$/;

function isCode(line: string): boolean {
  const t = line.trim();
  return !(
    t === "" ||
    t.startsWith("//") ||
    t.startsWith("*") ||
    t.startsWith("/*") ||
    t.startsWith("import ") ||
    t.startsWith("export type ") ||
    t.startsWith("export interface ") ||
    t.startsWith("type ") ||
    t.startsWith("interface ") ||
    t.startsWith("throw ") ||
    /^\w+\??: /.test(t) // a property declaration
  );
}

/**
 * Each line of `source` as code alone: the text of strings and template
 * literals blanked to "_", comments to spaces (same length, so a column in
 * one is the column in the other). A template's text may span lines, as a
 * help text does, and its "<" is no comparison; its `${...}` stays code.
 */
function codeLines(source: string): string[] {
  let out = "";
  // The templates open around this point, and the braces open inside their ${ }.
  const open: ("template" | "brace")[] = [];
  const blankedTo = (from: number, to: number, fill: string) => source.slice(from, to).replace(/[^\n]/g, fill);
  for (let i = 0; i < source.length; ) {
    const c = source[i]!;
    if (open.at(-1) === "template") {
      if (c === "`") open.pop();
      else if (c === "$" && source[i + 1] === "{") {
        open.push("brace");
        out += "${";
        i += 2;
        continue;
      }
      const step = c === "\\" ? 2 : 1;
      out += blankedTo(i, i + step, "_");
      i += step;
      continue;
    }
    let end = i + 1;
    if (c === "/" && source[i + 1] === "/") {
      end = source.indexOf("\n", i);
      if (end < 0) end = source.length;
      out += blankedTo(i, end, " ");
    } else if (c === "/" && source[i + 1] === "*") {
      end = source.indexOf("*/", i + 2);
      end = end < 0 ? source.length : end + 2;
      out += blankedTo(i, end, " ");
    } else if (c === '"' || c === "'") {
      while (end < source.length && source[end] !== c && source[end] !== "\n") end += source[end] === "\\" ? 2 : 1;
      end = Math.min(end + 1, source.length);
      out += blankedTo(i, end, "_");
    } else {
      if (c === "`") open.push("template");
      else if (c === "{" && open.length > 0) open.push("brace");
      else if (c === "}" && open.at(-1) === "brace") open.pop();
      out += c === "`" ? "_" : c;
    }
    i = end;
  }
  return out.split("\n");
}

/** A folder's sources, its subfolders' included (observe/monitor/hub.ts is observe's, tested in test/observe). */
function sourceFiles(folder: Folder): string[] {
  if (existsSync(join(ROOT, "src", `${folder}.ts`))) return [`src/${folder}.ts`].filter(chosen);
  const dir = join(ROOT, "src", folder);
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
    .map((f) => relative(ROOT, join(dir, f)))
    .filter(chosen)
    .sort();
}

/** Every mutant the operators give for `file`, in source order. */
function generated(folder: Folder, file: string): Mutant[] {
  const source = readFileSync(join(ROOT, file), "utf8");
  const lines = source.split("\n");
  const codes = codeLines(source);
  const out: Mutant[] = [];
  lines.forEach((line, i) => {
    if (!isCode(line)) return;
    const code = codes[i]!;
    for (const op of OPERATORS) {
      for (const m of code.matchAll(op.pattern)) {
        const at = m.index!;
        const after = line.slice(0, at) + op.replace(m[0]) + line.slice(at + m[0].length);
        out.push({ id: "", folder, file, line: i + 1, operator: op.name, before: line, after });
      }
    }
    const negated = negateIf(line, code);
    if (negated) out.push({ id: "", folder, file, line: i + 1, operator: "negate if", before: line, after: negated });
    if (CALL_STATEMENT.test(code) && !/\b(?:return|super)\b/.test(code)) {
      out.push({ id: "", folder, file, line: i + 1, operator: "drop call", before: line, after: line.replace(/\S.*$/, ";") });
    }
  });
  return out;
}

function curated(folder: Folder): Mutant[] {
  return CURATED.filter((c) => c.file.startsWith(`src/${folder}/`) && chosen(c.file)).map((c) => {
    const lines = readFileSync(join(ROOT, c.file), "utf8").split("\n");
    const i = lines.findIndex((l) => l.includes(c.find));
    if (i < 0) throw new Error(`curated mutant "${c.name}": "${c.find}" not found in ${c.file}; update test/long/curated-mutants.ts`);
    return { id: "", folder, file: c.file, line: i + 1, operator: `curated: ${c.name}`, before: lines[i]!, after: lines[i]!.replace(c.find, c.replace), curated: c };
  });
}

/** The JavaScript `source` compiles to, or undefined when it does not parse. */
function compiled(file: string, source: string): string | undefined {
  try {
    return new Bun.Transpiler({ loader: file.endsWith(".tsx") ? "tsx" : "ts" }).transformSync(source);
  } catch {
    return undefined;
  }
}

/** Marks the mutants that would prove nothing if run (see the header). */
function classify(mutants: Mutant[]): void {
  const output = new Map<string, string | undefined>();
  for (const m of mutants) {
    const source = readFileSync(join(ROOT, m.file), "utf8");
    if (!output.has(m.file)) output.set(m.file, compiled(m.file, source));
    const lines = source.split("\n");
    const reviewed = EQUIVALENT.find((e) => e.file === m.file && e.after === m.after.trim() && reviewedLines(e, lines).includes(m.line));
    lines[m.line - 1] = m.after;
    const mutated = compiled(m.file, lines.join("\n"));
    if (mutated === undefined) m.skip = "does not parse";
    else if (mutated === output.get(m.file)) m.skip = "changes only types";
    else if (reviewed) m.skip = `equivalent: ${reviewed.why}`;
  }
}

function planMutants(): Mutant[] {
  const all: Mutant[] = [];
  for (const folder of folders) {
    all.push(...curated(folder));
    for (const file of sourceFiles(folder)) {
      const candidates = generated(folder, file);
      // Seeded per file: a file's sample does not depend on which folders run or what other files hold.
      const rng = new Rng((seed ^ Bun.hash.crc32(file)) >>> 0);
      // Sample without replacement, then restore source order for a readable report.
      const picked = new Set<number>();
      while (picked.size < Math.min(maxPerFile, candidates.length)) picked.add(rng.int(0, candidates.length - 1));
      all.push(...[...picked].sort((a, b) => a - b).map((k) => candidates[k]!));
    }
  }
  for (const name of fileNames ?? []) {
    if (!folders.some((folder) => sourceFiles(folder).some((file) => names(name, file)))) {
      console.error(`--files: "${name}" is no source file of ${folders.join(", ")}`);
      process.exit(2);
    }
  }
  all.forEach((m, k) => (m.id = `M${String(k + 1).padStart(3, "0")}`));
  classify(all);
  return all;
}

/**
 * A copy of the repository as its tests see it: every file git tracks or
 * would (test/roles reads README.md, test/config.test.ts greps the tracked
 * files; test/cli runs the agent as nobody from it), as the working tree has
 * them, in a git repository of its own;
 * node_modules linked.
 */
function makeCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), "aa-mut-"));
  // Open to others as a checkout is (mkdtemp makes it 0700): tests run the agent as nobody from it.
  chmodSync(dir, 0o755);
  const git = (args: string[], cwd: string) => {
    const r = Bun.spawnSync(["git", ...args], { cwd, stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`git ${args.join(" ")} in ${cwd}: ${r.stderr.toString().trim()}`);
    return r.stdout.toString();
  };
  for (const file of git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).split("\0")) {
    // A tracked file deleted from the working tree is left out, as the tests would find it.
    if (file === "" || !existsSync(join(ROOT, file))) continue;
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    cpSync(join(ROOT, file), join(dir, file));
  }
  git(["init", "-q"], dir);
  git(["add", "-A"], dir);
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}

/** test/FOLDER/*.test.ts, or test/FOLDER.test.ts for a folder that is one file. */
function folderTests(folder: Folder): string[] {
  if (existsSync(join(ROOT, "test", `${folder}.test.ts`))) return [`test/${folder}.test.ts`];
  return readdirSync(join(ROOT, "test", folder))
    .filter((f) => f.endsWith(".test.ts"))
    .map((f) => `test/${folder}/${f}`);
}

/**
 * The files of test/cli that parse flags, the environment and config files,
 * print help and versions and tell bad input, through runCli and the agent
 * spawned, and the two elsewhere that hold a line the CLI words: about 15 s.
 * The whole folder takes two minutes a mutant, its input, output and Ogg
 * files carrying audio through the roles.
 */
const CLI_TESTS = [
  "test/cli/config.test.ts",
  "test/cli/help.test.ts",
  "test/cli/environment-names.test.ts",
  "test/cli/socket-path-flag.test.ts",
  "test/cli/config-port-origin.test.ts",
  "test/cli/path-failure.test.ts",
  // The refusal of an argument or variable whose bytes are not UTF-8: only a process's own /proc shows those bytes.
  "test/cli/argument-bytes.test.ts",
  // Where --log-max-bytes is applied to stderr, or not: only a spawned agent's own stderr shows it.
  "test/cli/log-file.test.ts",
  // A format error names the flag the command has for it (serve: --output-format), which the CLI picks.
  "test/media/file-format.test.ts",
];

/**
 * The files outside test/roles and test/cli's input and output that alone
 * hold parts of a role's assembly: one HTTP server for --metrics and
 * --monitor at one address (http-server), `sink_file=` on the stats line
 * (sink-file), the source's counts in output serve's stopped line
 * (ogg-roundtrip), input send seeing through a connect under way as a
 * signal lands (signal-timing). About 40 s together, on the three minutes
 * a roles mutant's run takes.
 */
const ROLE_EDGE_TESTS = ["test/observe/http-server.test.ts", "test/faults/sink-file.test.ts", "test/cli/ogg-roundtrip.test.ts", "test/faults/signal-timing.test.ts"];

/**
 * The file outside test/transport that alone holds a part of the socket
 * file's binding: the hidden name replaced, between the bind and the link,
 * by another user's symlink that link() then puts at the path, which must be
 * taken off it again (socket-ownership, its window held open by strace).
 * About 5 s, on the minute a transport mutant's run takes.
 */
const TRANSPORT_EDGE_TESTS = ["test/faults/socket-ownership.test.ts"];

/**
 * Folders whose tests are not test/FOLDER/ alone. The roles run as processes
 * in test/cli's input and output files ("input serve / input send as
 * processes"), which test/roles leaves to them; ROLE_EDGE_TESTS hold what
 * the roles assemble that only those files look at, as TRANSPORT_EDGE_TESTS
 * hold a part of the socket file's. cli runs against its fast
 * subset (CLI_TESTS); config.ts is read through that command line, so its own
 * unit tests run with them.
 */
const TESTS: Partial<Record<Folder, () => string[]>> = {
  roles: () => [...folderTests("roles"), "test/cli/input.test.ts", "test/cli/output.test.ts", ...ROLE_EDGE_TESTS],
  transport: () => [...folderTests("transport"), ...TRANSPORT_EDGE_TESTS],
  cli: () => CLI_TESTS,
  config: () => [...folderTests("config"), ...CLI_TESTS],
};

function testsOf(folder: Folder): string[] {
  return TESTS[folder]?.() ?? folderTests(folder);
}

/** The process groups of the tests running now: each is killed whole, the agents its tests spawned with it. */
const running = new Set<number>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // The group has gone already.
  }
}

/** Runs `folder`'s tests in `copy`; `failed` is bun test's "(fail)" lines, for the unmutated run to tell. */
async function runTests(copy: string, folder: Folder, timeoutMs: number): Promise<{ ok: boolean; timedOut: boolean; ms: number; failed: string[] }> {
  const started = performance.now();
  const proc = Bun.spawn([...DATA_LIMIT, process.execPath, "test", "--bail", "--timeout", "60000", ...testsOf(folder)], {
    cwd: copy,
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, AUDIO_AGENT_BIN: "" },
    // A group of its own: a test that hangs or is cut leaves no agent behind, running against the next mutant.
    detached: true,
  });
  running.add(proc.pid);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(proc.pid);
  }, timeoutMs);
  // Read as it comes (a full pipe would hold the tests up), and to its end once the group has gone with its agents.
  const output = new Response(proc.stderr).text();
  const code = await proc.exited;
  clearTimeout(timer);
  killGroup(proc.pid);
  running.delete(proc.pid);
  const failed = (await output).split("\n").filter((line) => line.startsWith("(fail)"));
  return { ok: code === 0 && !timedOut, timedOut, ms: performance.now() - started, failed };
}

/** One mutant as the report shows it: where, which operator, the line before and after. */
function describe(m: Mutant): string {
  return `${m.id} ${m.file}:${m.line} [${m.operator}]\n  - ${m.before.trim()}\n  + ${m.after.trim()}`;
}

if (values.tests) {
  for (const folder of folders) console.log(`${folder}: ${testsOf(folder).join(" ")}`);
  process.exit(0);
}

const mutants = planMutants();
if (values.list) {
  for (const m of mutants) console.log(`${describe(m)}${m.skip ? `\n  (not run: ${m.skip})` : ""}`);
  process.exit(0);
}

const toRun = mutants.filter((m) => !m.skip);
const copies = Array.from({ length: jobs }, makeCopy);
// Stopped by hand: the tests under way and the copies go too.
for (const [signal, number] of [["SIGINT", 2], ["SIGTERM", 15]] as const) {
  process.on(signal, () => {
    for (const pid of running) killGroup(pid);
    for (const copy of copies) rmSync(copy, { recursive: true, force: true });
    process.exit(128 + number);
  });
}
const baselineMs: Partial<Record<Folder, number>> = {};
try {
  console.log(
    `mutation run: ${toRun.length} mutants to run in ${folders.join(", ")} (seed ${seed}, ${maxPerFile} generated per file, ${jobs} jobs; ${mutants.length - toRun.length} left out)`,
  );
  for (const folder of folders) {
    const base = await runTests(copies[0]!, folder, 600_000);
    if (!base.ok) throw new Error(`the unmutated tests of ${folder} fail; fix them before a mutation run\n${base.failed.join("\n")}`);
    baselineMs[folder] = base.ms;
  }
  const results = new Map<Mutant, Outcome>();
  let next = 0;
  const worker = async (copy: string) => {
    while (next < toRun.length) {
      const m = toRun[next++]!;
      const path = join(copy, m.file);
      const original = readFileSync(path, "utf8");
      const lines = original.split("\n");
      lines[m.line - 1] = m.after;
      writeFileSync(path, lines.join("\n"));
      try {
        const r = await runTests(copy, m.folder, Math.max(30_000, baselineMs[m.folder]! * TIMEOUT_FACTOR));
        results.set(m, r.timedOut ? "timeout" : r.ok ? "survived" : "killed");
      } finally {
        writeFileSync(path, original);
      }
      if (results.get(m) === "survived") console.log(`  survived ${m.id} ${m.file}:${m.line} [${m.operator}]`);
      if (results.size % 20 === 0) console.log(`  ${results.size} run`);
    }
  };
  await Promise.all(copies.map(worker));

  console.log("\nscore per folder (killed, including timeouts, of the mutants run):");
  for (const folder of folders) {
    const mine = toRun.filter((m) => m.folder === folder);
    const killed = mine.filter((m) => results.get(m) !== "survived").length;
    const score = mine.length ? ((killed / mine.length) * 100).toFixed(1) : "n/a";
    console.log(`  ${folder.padEnd(10)} ${killed}/${mine.length} killed (${score} %)`);
  }
  const survivors = toRun.filter((m) => results.get(m) === "survived");
  console.log(`\nsurvivors (${survivors.length}):`);
  for (const m of survivors) console.log(describe(m));
  const left = mutants.filter((m) => m.skip);
  if (left.length > 0) {
    console.log(`\nleft out (${left.length}):`);
    for (const m of left) console.log(`${describe(m)}\n  (${m.skip})`);
  }
  // A curated mutant stands for a bug that once went unnoticed: its survival fails the run.
  const curatedSurvivors = survivors.filter((m) => m.curated);
  if (curatedSurvivors.length > 0) {
    console.log(`\nFAILED: ${curatedSurvivors.length} curated mutant(s) survived`);
    process.exitCode = 1;
  }
} finally {
  for (const copy of copies) rmSync(copy, { recursive: true, force: true });
}
