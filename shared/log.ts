// Structured logs for the long-lived Node processes (relay, gateway, prober, peer CLI): one JSON
// object per line on stdout, or a short human line for people at a terminal (docs/adr/0021).
// Node only: the Worker writes its own JSON line per request (functions/src/app.ts).
import { type DestinationStream, type Logger, pino } from "pino";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, scrubSecrets } from "./log-core.ts";

export type { LogFormat } from "./log-core.ts";
export { SECRET_VALUE, scrubSecrets } from "./log-core.ts";
export type { Logger };

/**
 * Field names that hold secrets (at the top level of a line; the header names also under
 * `headers`). pino replaces their values before the line is serialised.
 */
const SECRET_FIELDS = [
  "token",
  "accessToken",
  "refreshToken",
  "sessionToken",
  "jwt",
  "apiKey",
  "password",
  "secret",
  "authorization",
  "proxy-authorization",
  "cookie",
  "poolKey",
];
const key = (f: string) => (/^[A-Za-z_$][\w$]*$/.test(f) ? f : `["${f}"]`);
// Top level and under `headers`, not `*.name`: pino's wildcard paths walk every key of every line
// and made a line cost 46 us instead of 4 (measured); secrets deeper down are the value guard's.
const REDACT_PATHS = [
  ...SECRET_FIELDS.map(key),
  ...["authorization", "proxy-authorization", "cookie"].map(
    (f) => `headers${key(f).startsWith("[") ? "" : "."}${key(f)}`,
  ),
];

export interface LoggerOptions {
  /** What the process is: relay, gateway, prober, peer. Every line carries it. */
  service: string;
  /** json (default) for machines, text for a person at a terminal. */
  format?: LogFormat;
  level?: string;
  /** Where lines go (default stdout); tests pass a collector. */
  destination?: DestinationStream;
}

/** A logger whose every line is JSON (or text), redacted by field name and by value shape. */
export function createLogger(opts: LoggerOptions): Logger {
  const out = opts.destination ?? process.stdout;
  const destination: DestinationStream =
    opts.format === "text" ? { write: (line: string) => void out.write(textLine(line)) } : out;
  return pino(
    {
      level: opts.level ?? "info",
      base: { service: opts.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      hooks: { streamWrite: scrubSecrets },
    },
    destination,
  );
}

/**
 * LOG_FORMAT / LOG_LEVEL from the environment. A bad value falls back to the default here so the
 * daemon can still report it: its config schema (logSettings in ./config.ts) then refuses to start.
 */
export function loggerFromEnv(service: string, env: NodeJS.ProcessEnv, fallback: LogFormat = "json"): Logger {
  const format = (LOG_FORMATS as readonly string[]).includes(env.LOG_FORMAT ?? "")
    ? (env.LOG_FORMAT as LogFormat)
    : fallback;
  const level = (LOG_LEVELS as readonly string[]).includes(env.LOG_LEVEL ?? "") ? env.LOG_LEVEL : "info";
  return createLogger({
    service,
    format,
    level,
    ...(format === "json" ? { destination: stdoutLines() } : {}),
  });
}

let stdoutStream: DestinationStream | undefined;
/**
 * The daemons' stdout for JSON lines: the lines of one turn of the event loop go out in one write
 * at its end. On a pipe every write is a system call, and a relay taking back a fleet logs a line
 * per socket: about 70 us of CPU per line written alone (measured). One stream per process, so the
 * lines of several loggers keep their order; what is pending is written when the process exits
 * (a crash included; only SIGKILL loses the current turn's lines).
 */
function stdoutLines(): DestinationStream {
  if (stdoutStream) return stdoutStream;
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const out = pending.join("");
    pending = [];
    process.stdout.write(out);
  };
  process.on("exit", flush);
  stdoutStream = {
    write(line: string) {
      if (pending.push(line) === 1) setImmediate(flush);
    },
  };
  return stdoutStream;
}

const HIDDEN_IN_TEXT = new Set(["level", "time", "service", "msg", "event", "pid", "hostname"]);

/**
 * The human form of one JSON line: `[EVENT] message key=value ...` (the peer CLI's historic
 * format, which the local stack and its tests read), warnings and errors prefixed with the level.
 */
export function textLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const parts: string[] = [];
  if (o.level === "warn" || o.level === "error" || o.level === "fatal")
    parts.push(`[${String(o.level).toUpperCase()}]`);
  if (typeof o.event === "string") parts.push(`[${o.event}]`);
  if (typeof o.msg === "string" && o.msg !== "") parts.push(o.msg);
  for (const [k, v] of Object.entries(o)) {
    if (HIDDEN_IN_TEXT.has(k) || v === undefined) continue;
    parts.push(`${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  return `${parts.join(" ")}\n`;
}

/** A logger writing into an array (one parsed-able JSON string per line), for tests. */
export function memoryLogger(lines: string[], service = "test"): Logger {
  return createLogger({
    service,
    level: "debug",
    destination: { write: (line: string) => void lines.push(line.trimEnd()) },
  });
}

/** A logger that writes nothing, for tests that do not read logs. */
export function silentLogger(): Logger {
  return createLogger({ service: "test", level: "silent" });
}

/** The `msg` of each line a memoryLogger collected. */
export function logMessages(lines: string[]): string[] {
  return lines.map((l) => String((JSON.parse(l) as { msg?: unknown }).msg ?? ""));
}
