import { describe, expect, it } from "vitest";
import { startProberAdmin } from "./admin.ts";

const stats = () => ({ running: 2, probes: 41, breakerProbes: 3, historyErrors: 0 });

describe("prober admin port", () => {
  it("/health is 200 while Redis answers and 503 without the error text when it does not; /metrics renders the stats", async () => {
    let redisUp = true;
    const admin = await startProberAdmin(
      { host: "127.0.0.1", port: 0 },
      {
        prober: { stats },
        ping: async () => {
          if (!redisUp) throw new Error("connect ECONNREFUSED redis://default:hunter2@10.0.0.9:6379");
          return "PONG";
        },
      },
    );
    try {
      const base = `http://127.0.0.1:${admin.port}`;
      expect((await fetch(`${base}/health`)).status).toBe(200);
      redisUp = false;
      const down = await fetch(`${base}/health`);
      expect(down.status).toBe(503);
      const body = await down.text();
      expect(body).toContain('"redis":{"ok":false}');
      expect(body).not.toContain("hunter2");
      expect(body).not.toContain("ECONNREFUSED");
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toContain("prober_probes_total 41\n");
      expect(metrics).toContain("prober_probes_running 2\n");
      expect((await fetch(`${base}/nope`)).status).toBe(404);
    } finally {
      await admin.close();
    }
  });
});
