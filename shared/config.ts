import { z } from "zod";
import { LOG_FORMATS, LOG_LEVELS } from "./log-core.ts";

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

export const ENVIRONMENTS = ["production", "development", "test"] as const;

/**
 * The environment a long-lived process entry (`main.ts`) reads: ENVIRONMENT defaults to production
 * there, as the API's does, so a deploy that forgets it gets the strict behaviour.
 */
export function processEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  return { ENVIRONMENT: "production", ...env };
}

/**
 * Fails closed when ENVIRONMENT is not one of ENVIRONMENTS, or is production and any of `devOnly`
 * is set: those variables exist for the local stack and tests (loopback targets, local stand-ins)
 * and must never reach a deployed process. ENVIRONMENT absent counts as development: in-process
 * tests call the loaders directly; process entries add the production default (processEnv).
 */
export function refuseDevOnly(env: Record<string, unknown>, devOnly: readonly string[]): void {
  const environment = env.ENVIRONMENT ?? "development";
  if (!ENVIRONMENTS.includes(environment as (typeof ENVIRONMENTS)[number]))
    throw new ConfigError(
      ["ENVIRONMENT"],
      `ENVIRONMENT: must be one of ${ENVIRONMENTS.join(", ")} (got ${JSON.stringify(environment)})`,
    );
  if (environment !== "production") return;
  const set = devOnly.filter((k) => env[k] !== undefined && env[k] !== "");
  if (set.length)
    throw new ConfigError(
      set,
      set.map((k) => `${k}: development only; unset it, or set ENVIRONMENT=development`).join("; "),
    );
}

/**
 * LOG_LEVEL and LOG_FORMAT, spread into every daemon's schema so a misspelt value (`LOG_LEVEL=verbose`)
 * stops the start naming what is accepted. The logger that reports that error is built before the
 * configuration parses (loggerFromEnv), so it falls back to the defaults for that one line.
 */
export const logSettings = {
  LOG_LEVEL: z.enum(LOG_LEVELS).default("info"),
  LOG_FORMAT: z.enum(LOG_FORMATS).default("json"),
};
