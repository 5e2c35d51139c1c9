import { describe, expect, it } from "vitest";
import { ConfigError } from "../shared/config.ts";
import { loadRelayConfig } from "./config.ts";

const base = {
  JWT_SECRET: "a-jwt-secret-of-some-length",
  RELAY_SHARED_SECRET: "a-shared-secret-of-some-length",
  REDIS_URL: "redis://127.0.0.1:6379",
};

function failure(env: Record<string, string>): ConfigError {
  try {
    loadRelayConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("relay config", () => {
  it("applies the documented defaults", () => {
    const c = loadRelayConfig(base);
    expect(c).toMatchObject({
      RELAY_PORT: 8080,
      RELAY_INTERNAL_PORT: 8081,
      RELAY_HOST: "127.0.0.1",
      IDLE_TIMEOUT_MS: 90_000,
      CONNECT_TIMEOUT_MS: 10_000,
      PRESENCE_TTL_SECONDS: 30,
      PRESENCE_REFRESH_MS: 10_000,
      COUNTER_FLUSH_MS: 2_000,
      MAX_SOCKETS_PER_DEVICE: 8,
      RELAY_HEAP_GROWING_PERCENT: 100,
      REGION_RELAYS: {},
    });
    expect(c.RELAY_ID).toMatch(/^relay_[0-9a-f]{12}$/);
  });

  it("on a Fly machine, the relay id and internal URL come from the machine's private DNS name", () => {
    const fly = { ...base, FLY_MACHINE_ID: "148ed193b95948", FLY_APP_NAME: "peerproxy-relay-iad" };
    expect(loadRelayConfig({ ...fly, RELAY_INTERNAL_PORT: "9081" })).toMatchObject({
      RELAY_ID: "fly_148ed193b95948",
      RELAY_INTERNAL_URL: "http://148ed193b95948.vm.peerproxy-relay-iad.internal:9081",
    });
    // What an operator sets explicitly wins over the platform's defaults.
    expect(
      loadRelayConfig({ ...fly, RELAY_ID: "relay-a", RELAY_INTERNAL_URL: "http://10.0.0.5:8081" }),
    ).toMatchObject({
      RELAY_ID: "relay-a",
      RELAY_INTERNAL_URL: "http://10.0.0.5:8081",
    });
  });

  it("parses REGION_RELAYS and the public URLs", () => {
    const c = loadRelayConfig({
      ...base,
      REGION_RELAYS: JSON.stringify({ eu: "wss://eu.relay.example", us: "wss://us.relay.example" }),
      RELAY_PUBLIC_URL: "wss://us.relay.example",
      RELAY_INTERNAL_URL: "http://10.0.0.5:8081",
    });
    expect(c.REGION_RELAYS.eu).toBe("wss://eu.relay.example");
    expect(c.RELAY_PUBLIC_URL).toBe("wss://us.relay.example");
  });

  it("fails closed naming each bad variable", () => {
    expect(failure({ ...base, JWT_SECRET: "short" }).variables).toEqual(["JWT_SECRET"]);
    expect(failure({ ...base, REDIS_URL: "http://x" }).variables).toEqual(["REDIS_URL"]);
    expect(failure({ ...base, REGION_RELAYS: "{not json" }).variables).toEqual(["REGION_RELAYS"]);
    expect(failure({ ...base, REGION_RELAYS: '{"eu": "http://x"}' }).variables).toEqual(["REGION_RELAYS"]);
    expect(failure({ ...base, RELAY_PUBLIC_URL: "http://x" }).variables).toEqual(["RELAY_PUBLIC_URL"]);
    expect(failure({ ...base, COUNTER_FLUSH_MS: "6000" }).variables).toEqual(["COUNTER_FLUSH_MS"]);
    const missing = failure({});
    expect(missing.variables.sort()).toEqual(["JWT_SECRET", "REDIS_URL", "RELAY_SHARED_SECRET"]);
  });
});
