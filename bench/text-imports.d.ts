// src/cli/bench.ts embeds bench/native-baseline.c with `import ... with { type: "text" }`.
declare module "*.c" {
  const text: string;
  export default text;
}
