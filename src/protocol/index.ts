export * from "./config-payload.ts";
export * from "./errors.ts";
export * from "./frame-parser.ts";
export * from "./header.ts";
export * from "./limits.ts";
export * from "./little-endian.ts";
export * from "./message-type.ts";
export * from "./timestamp.ts";
