// A misspelt LOG_LEVEL or LOG_FORMAT stops each daemon at start, naming the variable and the values
// it accepts, instead of silently logging at the default (shared/config.ts logSettings).
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");

describe("log settings", () => {
  for (const daemon of ["relay-node", "gateway-node", "prober"]) {
    it(`${daemon} refuses LOG_LEVEL=verbose and LOG_FORMAT=xml, naming what is accepted`, () => {
      const run = spawnSync(process.execPath, [join(root, daemon, "main.ts")], {
        env: { PATH: process.env.PATH, ENVIRONMENT: "development", LOG_LEVEL: "verbose", LOG_FORMAT: "xml" },
        encoding: "utf8",
        timeout: 30_000,
      });
      expect(run.status).toBe(2);
      const line = JSON.parse(run.stdout.trim().split("\n").at(-1)!) as { level: string; msg: string };
      expect(line.level).toBe("fatal");
      expect(line.msg).toMatch(
        /LOG_LEVEL: [^;]*"fatal"\|"error"\|"warn"\|"info"\|"debug"\|"trace"\|"silent"/,
      );
      expect(line.msg).toMatch(/LOG_FORMAT: [^;]*"json"\|"text"/);
    });
  }

  it("a valid LOG_LEVEL passes the daemon's config (the failure is then about other variables)", () => {
    const run = spawnSync(process.execPath, [join(root, "relay-node", "main.ts")], {
      env: { PATH: process.env.PATH, ENVIRONMENT: "development", LOG_LEVEL: "debug", LOG_FORMAT: "json" },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(run.status).toBe(2);
    expect(run.stdout).not.toMatch(/LOG_LEVEL|LOG_FORMAT/);
    expect(run.stdout).toMatch(/JWT_SECRET/);
  });
});
