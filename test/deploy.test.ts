import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GATEWAY_DEV_ONLY, loadGatewayConfig } from "../gateway-node/config.ts";
import { loadProberConfig, PROBER_DEV_ONLY } from "../prober/config.ts";
import { loadRelayConfig } from "../relay-node/config.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");

describe("deploy bundle", () => {
  it("wrangler deploy --dry-run bundles the Worker offline", () => {
    const out = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "bundle-"));
    const r = spawnSync(join(root, "node_modules/.bin/wrangler"), ["deploy", "--dry-run", "--outdir", out], {
      cwd: root,
      encoding: "utf8",
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        NO_COLOR: "1",
      },
      timeout: 120_000,
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const files = readdirSync(out);
    const main = files.find((f) => f.endsWith(".js"));
    expect(main, files.join(",")).toBeDefined();
    expect(statSync(join(out, main!)).size).toBeGreaterThan(10_000);
    expect(r.stdout + r.stderr).toMatch(/--dry-run: exiting now/);
  });
});

// The deploy files are checked offline (no Docker engine, no flyctl): each names the ports, checks,
// commands and variables the processes really use, read from the processes' own config schemas.
type FlyToml = {
  app: string;
  kill_signal?: string;
  build?: { dockerfile?: string };
  processes: Record<string, string>;
  env: Record<string, string>;
  services?: { internal_port: number; protocol: string; ports: { port: number; handlers?: string[] }[] }[];
  checks: Record<string, { type: string; port: number; path: string }>;
};

/** TOML through Python's standard tomllib (3.11+), so the project needs no TOML package. */
function readToml(path: string): FlyToml {
  const out = execFileSync(
    "python3",
    ["-c", "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))", path],
    { encoding: "utf8" },
  );
  return JSON.parse(out) as FlyToml;
}

const secrets = {
  JWT_SECRET: "a-jwt-secret-of-some-length-0123",
  RELAY_SHARED_SECRET: "a-shared-secret-of-some-length-0",
  REDIS_URL: "rediss://default:token@db.upstash.io:6379",
};
// Fly sets these on every machine; the relay derives its id and internal URL from them.
const flyMachine = { FLY_MACHINE_ID: "148ed193b95948", FLY_APP_NAME: "peerproxy-relay-iad" };

describe("deploy files", () => {
  it("the relay's fly.toml: wss on 443 to RELAY_PORT, the internal port unpublished, the check on the internal /health", () => {
    const fly = readToml(join(root, "deploy/fly/relay.toml"));
    const c = loadRelayConfig({ ...fly.env, ...secrets, ...flyMachine });
    expect(fly.processes).toEqual({ relay: "node relay-node/main.ts" });
    expect(fly.kill_signal).toBe("SIGTERM");
    expect(fly.env.ENVIRONMENT).toBe("production");
    const published = (fly.services ?? []).map((s) => s.internal_port);
    expect(published).toEqual([c.RELAY_PORT]);
    expect(published).not.toContain(c.RELAY_INTERNAL_PORT);
    expect(fly.services?.[0]?.ports).toEqual([{ port: 443, handlers: ["tls", "http"] }]);
    expect(c.RELAY_PUBLIC_URL).toMatch(/^wss:\/\//);
    expect(c.RELAY_INTERNAL_URL).toBe(
      `http://148ed193b95948.vm.peerproxy-relay-iad.internal:${c.RELAY_INTERNAL_PORT}`,
    );
    expect(Object.values(fly.checks)).toEqual([
      expect.objectContaining({ type: "http", port: c.RELAY_INTERNAL_PORT, path: "/health" }),
    ]);
  });

  it("the gateway's fly.toml: raw TCP on the proxy ports (no HTTP handler), the admin port private and checked", () => {
    const fly = readToml(join(root, "deploy/fly/gateway.toml"));
    const c = loadGatewayConfig({ ...fly.env, ...secrets });
    expect(fly.processes).toEqual({ gateway: "node gateway-node/main.ts" });
    expect(fly.env.ENVIRONMENT).toBe("production");
    for (const k of GATEWAY_DEV_ONLY) expect(fly.env[k]).toBeUndefined();
    const services = fly.services ?? [];
    expect(services.map((s) => s.internal_port).sort()).toEqual(
      [c.GATEWAY_HTTP_PORT, c.GATEWAY_SOCKS_PORT].sort(),
    );
    for (const s of services) {
      expect(s.protocol).toBe("tcp");
      for (const p of s.ports) expect(p.handlers ?? []).toEqual([]);
    }
    expect(services.map((s) => s.internal_port)).not.toContain(c.GATEWAY_ADMIN_PORT);
    expect(Object.values(fly.checks)).toEqual([
      expect.objectContaining({ type: "http", port: c.GATEWAY_ADMIN_PORT, path: "/health" }),
    ]);
  });

  it("the prober's fly.toml: no public service, the check on its admin /health", () => {
    const fly = readToml(join(root, "deploy/fly/prober.toml"));
    const c = loadProberConfig({ ...fly.env, ...secrets, WATCHDOG_PASSWORD: "pak_secret" });
    expect(fly.processes).toEqual({ prober: "node prober/main.ts" });
    expect(fly.services ?? []).toEqual([]);
    for (const k of PROBER_DEV_ONLY) expect(fly.env[k]).toBeUndefined();
    expect(Object.values(fly.checks)).toEqual([
      expect.objectContaining({ type: "http", port: c.PROBER_ADMIN_PORT, path: "/health" }),
    ]);
  });

  it("every fly.toml builds the one Dockerfile, whose COPY sources all exist and whose entry runs each process", () => {
    const dockerfile = join(root, "deploy/Dockerfile");
    for (const f of ["relay", "gateway", "prober"]) {
      const fly = readToml(join(root, `deploy/fly/${f}.toml`));
      expect(join(root, "deploy/fly", fly.build?.dockerfile ?? "")).toBe(dockerfile);
      for (const cmd of Object.values(fly.processes)) {
        const [bin, entry] = cmd.split(" ");
        expect(bin).toBe("node");
        expect(existsSync(join(root, entry!)), entry).toBe(true);
      }
    }
    const text = readFileSync(dockerfile, "utf8");
    const copies = [...text.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    expect(copies.length).toBeGreaterThan(3);
    for (const src of copies) expect(existsSync(join(root, src)), `COPY ${src}`).toBe(true);
    // Every directory a process imports from is copied into the image.
    for (const dir of ["shared", "relay-node", "gateway-node", "prober"]) expect(copies).toContain(dir);
    expect(text).toMatch(/^USER node$/m);
    expect(text).toMatch(/^ENTRYPOINT \["node"\]$/m);
    expect(text).toMatch(/--omit=dev/);
  });

  it("the relay and the gateway run on jemalloc wherever deployed, purging from its background thread: one setting, installed in the image, found by the loader", () => {
    const settings = ["relay", "gateway"].flatMap((name) => {
      const unit = readFileSync(join(root, `deploy/systemd/peerproxy-${name}.service`), "utf8");
      const fly = readToml(join(root, `deploy/fly/${name}.toml`)).env;
      return [
        [
          unit.match(/^Environment=LD_PRELOAD=(\S+)$/m)?.[1],
          unit.match(/^Environment=MALLOC_CONF=(\S+)$/m)?.[1],
        ],
        [fly.LD_PRELOAD, fly.MALLOC_CONF],
      ];
    });
    expect(settings).toEqual(Array(4).fill(["libjemalloc.so.2", "background_thread:true"]));
    expect(readFileSync(join(root, "deploy/Dockerfile"), "utf8")).toMatch(
      /apt-get install .*\blibjemalloc2\b/,
    );
    // A bare name (no directory) so one file serves every architecture: the loader must find it,
    // and the setting must start jemalloc's purging thread (a misspelt one only warns on stderr).
    const [LD_PRELOAD, MALLOC_CONF] = settings[0]!;
    const child = spawnSync(
      process.execPath,
      [
        "-e",
        `const fs = require("node:fs");
        setTimeout(() => {
          const threads = fs.readdirSync("/proc/self/task").map((t) => fs.readFileSync("/proc/self/task/" + t + "/comm", "utf8"));
          process.stdout.write(fs.readFileSync("/proc/self/maps", "utf8") + threads.join(""));
        }, 200);`,
      ],
      { env: { ...process.env, LD_PRELOAD, MALLOC_CONF }, encoding: "utf8" },
    );
    expect(child.stderr).toBe("");
    expect(child.status).toBe(0);
    expect(child.stdout).toMatch(/\/libjemalloc\.so\.2$/m);
    expect(child.stdout).toMatch(/^jemalloc_bg_thd$/m);
  });

  it("the systemd units are hardened, restart on failure but not on a configuration error, and name their env files", () => {
    for (const name of ["relay", "gateway", "prober"]) {
      const text = readFileSync(join(root, `deploy/systemd/peerproxy-${name}.service`), "utf8");
      for (const line of [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=always",
        "RestartPreventExitStatus=2",
        "KillSignal=SIGTERM",
        `EnvironmentFile=/etc/peerproxy/${name}.env`,
      ])
        expect(text, `${name}: ${line}`).toContain(`\n${line}\n`);
      expect(existsSync(join(root, `deploy/env/${name}.env.example`))).toBe(true);
      if (name !== "prober") expect(text).toMatch(/\nLimitNOFILE=1048576\n/);
    }
  });
});
