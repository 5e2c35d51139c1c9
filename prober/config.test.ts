import { describe, expect, it } from "vitest";
import { ConfigError } from "../shared/config.ts";
import { loadProberConfig } from "./config.ts";

const base = {
  REDIS_URL: "redis://127.0.0.1:6379",
  RELAY_SHARED_SECRET: "s".repeat(16),
  PROBE_TARGET_HOST: "probe.example",
};

describe("prober config", () => {
  it("fails closed naming the variable when the probe target is missing", () => {
    const err = (() => {
      try {
        loadProberConfig({ ...base, PROBE_TARGET_HOST: undefined });
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err?.variables).toEqual(["PROBE_TARGET_HOST"]);
  });

  it("names inconsistent tier thresholds and an unreadable CA file", () => {
    expect(() => loadProberConfig({ ...base, PROBE_MEDIUM_KBPS: "5000", PROBE_FAST_KBPS: "100" })).toThrow(
      /PROBE_MEDIUM_KBPS/,
    );
    expect(() => loadProberConfig({ ...base, PROBE_TARGET_CA: "/nonexistent/ca.pem" })).toThrow(
      /PROBE_TARGET_CA/,
    );
  });

  it("accepts PEM text for the CA and defaults the cadence to a minute", () => {
    const pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const c = loadProberConfig({ ...base, PROBE_TARGET_CA: pem });
    expect(c.PROBE_TARGET_CA).toBe(pem);
    expect(c.PROBE_INTERVAL_MS).toBe(60_000);
    expect(c.PROBE_TARGET_PATH).toBe("/bytes/{n}");
  });

  it("watchdog: off without its variables; partial credentials fail closed naming what is missing", () => {
    const c = loadProberConfig(base);
    expect(c.WATCHDOG_PROXY_URL).toBeUndefined();
    expect(c.WATCHDOG_INTERVAL_MS).toBe(60_000);
    expect(c.WATCHDOG_FAILS_TO_ALERT).toBe(2);
    const err = (() => {
      try {
        loadProberConfig({ ...base, WATCHDOG_PROXY_URL: "http://127.0.0.1:7000" });
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(err?.variables).toEqual(["WATCHDOG_USERNAME", "WATCHDOG_PASSWORD"]);
    const full = loadProberConfig({
      ...base,
      WATCHDOG_PROXY_URL: "http://127.0.0.1:7000",
      WATCHDOG_USERNAME: "psx_Demo",
      WATCHDOG_PASSWORD: "pak_0123456789abcdef",
      WATCHDOG_GROUPS: "peer-us,MBL-de,peer-us",
    });
    expect(full.WATCHDOG_USERNAME).toBe("psx_demo");
    expect(full.WATCHDOG_GROUPS).toEqual(["peer-us", "mbl-de"]);
  });

  it("watchdog: a proxy URL carrying credentials is refused without echoing them", () => {
    let message = "";
    try {
      loadProberConfig({
        ...base,
        WATCHDOG_PROXY_URL: "http://psx_demo:pak_secret@127.0.0.1:7000",
        WATCHDOG_USERNAME: "psx_demo",
        WATCHDOG_PASSWORD: "pak_0123456789abcdef",
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/WATCHDOG_PROXY_URL/);
    expect(message).not.toMatch(/pak_/);
  });
});
