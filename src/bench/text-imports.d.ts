// src/bench/bench.ts embeds src/bench/native-baseline.c with `import ... with { type: "text" }`.
declare module "*.c" {
  const text: string;
  export default text;
}
