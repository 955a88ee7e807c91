/**
 * How lower layers tell the CLI what happened, without importing the logger:
 * the role wires this to the structured logger (and tests to an array).
 */
export type ReportLevel = "debug" | "info" | "warn" | "error";
export type Report = (level: ReportLevel, message: string, fields?: Record<string, unknown>) => void;

export const silent: Report = () => {};
