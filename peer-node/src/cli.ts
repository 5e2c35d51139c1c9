#!/usr/bin/env node
import { createLogger } from "../../shared/log.ts";
import { parseCli, RANDOM_NAME_WARNING, reconnectTimingFromEnv } from "./config.ts";
import { IdentityRejected } from "./identity.ts";
import { Peer } from "./peer.ts";

// Exit codes: 0 stopped by a signal, 1 the API refused us (bad key, limit), 2 bad flags.
const parsed = parseCli(process.argv.slice(2), process.env);
if (parsed.ok === "help") {
  console.log(parsed.text);
  process.exit(0);
}
if (parsed.ok === false) {
  console.error(`peerproxy-peer: ${parsed.message}`);
  process.exit(2);
}
const config = parsed.config;
const reconnect = reconnectTimingFromEnv(process.env);
if (!reconnect.ok) {
  console.error(`peerproxy-peer: ${reconnect.message}`);
  process.exit(2);
}
if (config.nameWasRandom) {
  console.error(`[WARN] ${RANDOM_NAME_WARNING}`);
  console.error(`[WARN] this run's name: ${config.name}`);
}
if (config.allowPrivateTargets)
  console.error("[WARN] private/loopback targets allowed (-allow-private): development only");

// People at a terminal read `[EVENT] key=value` lines (the default, and what the local stack reads);
// LOG_FORMAT=json makes each a JSON object for a log shipper. Either way secrets are scrubbed.
const logger = createLogger({ service: "peer", format: process.env.LOG_FORMAT === "json" ? "json" : "text" });
const log = (line: string) => {
  const m = /^\[([A-Z_]+)\] ?([\s\S]*)$/.exec(line);
  if (m) logger.info({ event: m[1] }, m[2]);
  else logger.info(line);
};
const peer = new Peer({ config, log, timing: reconnect.timing });
let signals = 0;
const onSignal = (sig: NodeJS.Signals) => {
  if (++signals > 1) process.exit(130);
  log(`[SIGNAL] ${sig}: closing sockets`);
  void peer.stop().then(() => process.exit(0));
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);

try {
  await peer.start();
} catch (err) {
  if (err instanceof IdentityRejected)
    console.error(`peerproxy-peer: registration refused (HTTP ${err.status}): ${err.message}`);
  else console.error(`peerproxy-peer: cannot start: ${(err as Error).message}`);
  process.exit(1);
}
