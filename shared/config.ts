import type { z } from "zod";

/** Thrown when configuration does not parse; the message names every offending variable. */
export class ConfigError extends Error {
  readonly variables: string[];
  constructor(variables: string[], details: string) {
    super(`invalid configuration: ${details}`);
    this.name = "ConfigError";
    this.variables = variables;
  }
}

/** Parses a flat env-like record once against a zod schema; fails closed naming each bad variable. */
export function parseConfig<S extends z.ZodType>(schema: S, source: Record<string, unknown>): z.output<S> {
  const result = schema.safeParse(source);
  if (result.success) return result.data;
  const variables = [...new Set(result.error.issues.map((issue) => String(issue.path[0] ?? "(root)")))];
  const details = result.error.issues
    .map((issue) => `${String(issue.path.join(".") || "(root)")}: ${issue.message}`)
    .join("; ");
  throw new ConfigError(variables, details);
}
