// Prometheus metrics for the long-lived Node processes (relay, gateway, prober): one prom-client
// registry per relay/gateway/prober object (tests start several in one Node process), served merged
// with one per-process registry of Node's default process, heap, GC and event-loop-lag metrics
// (docs/adr/0021).
import type { ServerResponse } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export { Counter, Gauge, Histogram, Registry };

/** Latency buckets in seconds: 1 ms to 10 s, where tunnel setup and a Redis script call live. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A registry for one relay, gateway or prober. */
export function createRegistry(): Registry {
  return new Registry();
}

let processRegistry: Registry | undefined;

/**
 * The process's own metrics (`process_*`, `nodejs_*`, event-loop lag included), collected once per
 * process however many registries serve them: the collectors (an event-loop monitor, a GC
 * observer) cannot be stopped, so one per relay or gateway object would pile up in tests.
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    // The event-loop delay histogram is sampled every 10 ms by default; 20 ms halves the cost and
    // still resolves the lag that matters (tens of ms and up).
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: 20 });
  }
  return processRegistry;
}

/** The registry's metrics and the process's, in the Prometheus text format. */
export function renderMetrics(registry: Registry): Promise<string> {
  return Registry.merge([registry, processMetrics()]).metrics();
}

/** Answers GET /metrics from a registry in the Prometheus text format. */
export async function serveMetrics(registry: Registry, res: ServerResponse): Promise<void> {
  try {
    const body = await renderMetrics(registry);
    res.writeHead(200, { "content-type": registry.contentType }).end(body);
  } catch (err) {
    res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${(err as Error).message}\n`);
  }
}

type Samples = () => Iterable<[Record<string, string>, number]>;

/** What a scraped metric is given: it is emptied and refilled from `read` on every scrape. */
function scraped<M extends Counter | Gauge>(
  registry: Registry,
  name: string,
  help: string,
  read: Samples,
  labelNames: string[],
  put: (m: M, labels: Record<string, string>, v: number) => void,
) {
  return {
    name,
    help,
    labelNames,
    registers: [registry],
    collect(this: M) {
      this.reset();
      for (const [labels, v] of read()) put(this, labels, v);
    },
  };
}

/**
 * A counter whose value lives in a plain number the hot path bumps (`x += n` per chunk) and is
 * copied into the registry only when scraped: no label lookup per chunk.
 */
export function scrapedCounter(
  registry: Registry,
  name: string,
  help: string,
  read: Samples,
  labelNames: string[] = [],
): Counter {
  return new Counter(scraped<Counter>(registry, name, help, read, labelNames, (m, l, v) => m.inc(l, v)));
}

/** A gauge read from live state when scraped. */
export function scrapedGauge(
  registry: Registry,
  name: string,
  help: string,
  read: Samples,
  labelNames: string[] = [],
): Gauge {
  return new Gauge(scraped<Gauge>(registry, name, help, read, labelNames, (m, l, v) => m.set(l, v)));
}

/** Map<label value, n> as scrape samples for one label. */
export function byLabel(label: string, map: Map<string, number>): [Record<string, string>, number][] {
  return [...map].map(([k, v]) => [{ [label]: k }, v]);
}
