#!/usr/bin/env bun
import { runCli } from "./cli/run.ts";

// A compiled binary's argv is ["bun", "/$bunfs/root/<name>", ...args], same shape as `bun src/main.ts`.
const code = await runCli(process.argv.slice(2));
process.exit(code);
