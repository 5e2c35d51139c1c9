import { describe, expect, it } from "vitest";
import { startProberAdmin } from "./admin.ts";
import { countProbe, newProberMetrics, registerProberMetrics } from "./metrics.ts";

const stats = () => ({ running: 2, probes: 41, breakerProbes: 3, historyErrors: 0 });
const metrics = newProberMetrics();
registerProberMetrics(metrics, stats);
countProbe(metrics, "ok", "scheduled", 0.8);
countProbe(metrics, "tls_timeout", "breaker", 12);

describe("prober admin port", () => {
  it("/health is 200 while Redis answers and 503 without the error text when it does not; /metrics renders the stats, probe outcomes by failure code and event-loop lag", async () => {
    let redisUp = true;
    const admin = await startProberAdmin(
      { host: "127.0.0.1", port: 0 },
      {
        prober: { metrics },
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
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(text).toContain("prober_probes_total 41\n");
      expect(text).toContain("prober_probes_running 2\n");
      expect(text).toContain('prober_probe_results_total{result="tls_timeout",trigger="breaker"} 1\n');
      expect(text).toContain('prober_probe_seconds_bucket{le="1",result="ok"} 1\n');
      expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
      expect((await fetch(`${base}/nope`)).status).toBe(404);
    } finally {
      await admin.close();
    }
  });
});
