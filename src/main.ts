#!/usr/bin/env bun
import { runCli } from "./cli/run.ts";

// A compiled binary's argv is ["bun", "/$bunfs/root/<name>", ...args], same shape as `bun src/main.ts`.
// No top-level await: the compiled binary is built with bytecode, which needs a CommonJS-shaped entry.
void runCli(process.argv.slice(2)).then((code) => process.exit(code));
