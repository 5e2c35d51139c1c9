// One fleet-simulator process: `FLEET_SETTINGS` (JSON, FleetSettings less shimAddress) in the
// environment. Prints `fleet registered devices=N`, writes the device ids to `FLEET_IDS_FILE` when
// set, then `fleet connected sockets=N` once every steady device holds its sockets; stops its
// devices (close 1000) on SIGTERM. The bench runs one or a few of these beside the relay:
//   FLEET_SETTINGS='{"apiUrl":"http://127.0.0.1:8787","apiKey":"psx_...","devices":100,
//     "socketsPerDevice":2,"countries":{"US":3,"DE":1},"misbehaviour":{"slow":0.05},
//     "stateDir":"/dev/shm/fleet","namePrefix":"sim"}' node bench/fleet/main.ts
import { appendFileSync, writeFileSync } from "node:fs";
import { type FleetSettings, startFleet } from "./fleet.ts";
import { SHIM_ADDRESS } from "./shims.ts";

const settings = JSON.parse(process.env.FLEET_SETTINGS ?? "") as Omit<FleetSettings, "shimAddress">;
const fleet = await startFleet({ ...settings, shimAddress: (b) => SHIM_ADDRESS[b] });
console.log(`fleet registered devices=${fleet.devices.length}`);
if (process.env.FLEET_IDS_FILE)
  writeFileSync(
    process.env.FLEET_IDS_FILE,
    JSON.stringify(
      fleet.devices.map((d) => ({
        id: d.deviceId,
        country: d.country,
        behaviour: d.behaviour,
        flapping: d.flapping,
      })),
    ),
  );
// FLEET_EVENTS_FILE: the devices' failover steps as JSON lines, appended as they happen.
if (process.env.FLEET_EVENTS_FILE) {
  const file = process.env.FLEET_EVENTS_FILE;
  let written = 0;
  setInterval(() => {
    const fresh = fleet.failoverEvents.slice(written);
    written += fresh.length;
    if (fresh.length) appendFileSync(file, fresh.map((e) => `${JSON.stringify(e)}\n`).join(""));
  }, 1_000).unref();
}
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await fleet.stop();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
await fleet.waitConnected(Number(process.env.FLEET_CONNECT_TIMEOUT_MS ?? 120_000));
console.log(`fleet connected sockets=${fleet.openSockets()}`);
// Stay up: the devices hold their sockets and serve tunnels until SIGTERM.
setInterval(() => {}, 1 << 30);
