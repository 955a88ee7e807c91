// src/bench/bench.ts embeds src/bench/native-baseline.c, and src/bench/floor.ts the bare Bun
// program, with `import ... with { type: "text" }`.
declare module "*.c" {
  const text: string;
  export default text;
}
declare module "*/bare-bun.js" {
  const text: string;
  export default text;
}
